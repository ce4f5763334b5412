"""Which operators a CPU training step spends its time in (torch.profiler, self time per operator).

    python benchmarks/profile_ops.py [--config-file configs/nuclei_quickstart.yaml] [--steps 4] [--rows 20]

Real batches of the config's training set (DataLoader without workers, prepared before timing), fp32,
the same forward/backward/SGD sequence as training, 2 warm-up steps. Prints s/iter and the table.
Run it under `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` to see an AVX2 CPU's kernels.
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config-file", default="configs/nuclei_quickstart.yaml")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rows", type=int, default=20)
    a = p.parse_args()
    from detgn.config import get_cfg
    from detgn.data import build_detection_train_loader
    from detgn.modeling import build_model
    from detgn.solver import build_optimizer

    cfg = get_cfg()
    cfg.merge_from_file(a.config_file)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    loader = iter(build_detection_train_loader(cfg))
    batches = [next(loader) for _ in range(a.steps + 2)]

    def step(batch):
        loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for b in batches[:2]:
        step(b)
    t = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for b in batches[2:]:
            step(b)
    print(
        f"{(time.perf_counter() - t) / a.steps:.3f} s/iter (profiled, {torch.get_num_threads()} threads, {a.config_file})"
    )
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
