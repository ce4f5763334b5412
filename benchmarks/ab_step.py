"""A/B timing of two detgn variants in one process, steps interleaved (drift of a shared machine hits both).

    python benchmarks/ab_step.py --config-file configs/nuclei_quickstart.yaml --a MODEL.MEMORY_FORMAT contiguous \
        --b MODEL.MEMORY_FORMAT channels_last [--task train|infer] [--iters 20] [--warmup 3]

Both models get the same weights and the same batches; prints median s/iter of each and b/a.
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.config import get_cfg  # noqa: E402
from detgn.engine.precision import cpu_description, cpu_model  # noqa: E402
from detgn.modeling import build_model  # noqa: E402
from detgn.solver import build_optimizer  # noqa: E402


def _cfg(path, opts):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    return cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--a", nargs="*", default=[], help="KEY VALUE overrides of variant a")
    ap.add_argument("--b", nargs="*", default=[], help="KEY VALUE overrides of variant b")
    ap.add_argument("--task", choices=["train", "infer"], default="train")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from detgn.data import build_detection_train_loader

    cfgs = {"a": _cfg(args.config_file, args.a), "b": _cfg(args.config_file, args.b)}
    torch.manual_seed(0)
    models = {k: build_model(c) for k, c in cfgs.items()}
    models["b"].load_state_dict(models["a"].state_dict())
    loader = iter(build_detection_train_loader(cfgs["a"], seed=0))
    batches = [next(loader) for _ in range(8)]
    opts = {k: build_optimizer(cfgs[k], m) for k, m in models.items()}
    times = {"a": [], "b": []}
    for i in range(args.warmup + args.iters):
        batch = batches[i % len(batches)]
        for k in ("a", "b") if i % 2 == 0 else ("b", "a"):
            m = models[k]
            t = time.perf_counter()
            if args.task == "train":
                m.train()
                torch.manual_seed(i)
                loss = sum(m(batch).values())
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
            else:
                m.eval()
                with torch.no_grad():
                    m([{kk: v for kk, v in d.items() if kk != "instances"} for d in batch])
            if i >= args.warmup:
                times[k].append(time.perf_counter() - t)
    ma, mb = statistics.median(times["a"]), statistics.median(times["b"])
    print(
        f"cpu: {cpu_model()} ({cpu_description()}), {args.threads} threads, task {args.task}, {args.iters} interleaved iterations"
    )
    print(f"a {' '.join(args.a) or '(config)'}: {ma:.4f} s/iter median ({min(times['a']):.4f}-{max(times['a']):.4f})")
    print(f"b {' '.join(args.b) or '(config)'}: {mb:.4f} s/iter median ({min(times['b']):.4f}-{max(times['b']):.4f})")
    print(f"b / a = {mb / ma:.3f}")


if __name__ == "__main__":
    main()
