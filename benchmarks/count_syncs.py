"""Host synchronisations per training step on CUDA: detgn's trainer step (SimpleTrainer/AMPTrainer.run_step,
no flush: the losses stay on the GPU) and, for comparison, the bare forward+backward+SGD step of the same model.

    python benchmarks/count_syncs.py [--height 800 --width 1333 --images 2] [--amp none|bf16] [--steps 3]

torch.cuda.set_sync_debug_mode("warn") makes every synchronising call (`.item()`, `nonzero`, a copy to the
host, ...) emit a warning; the warnings of each step are counted and grouped by the source line that caused
them. Needs a CUDA device (prints a line and exits 0 on a machine without one).
"""
import argparse
import collections
import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=1333)
    p.add_argument("--images", type=int, default=2)
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    if not torch.cuda.is_available():
        print("count_syncs: no CUDA device here; nothing to count")
        return
    from benchmarks.compare_torchvision import detgn_model
    from benchmarks.peers import synthetic_batch, to_detgn_inputs
    from detgn.engine import AMPTrainer, SimpleTrainer
    from detgn.utils.events import EventStorage

    torch.backends.cudnn.benchmark = False
    model = detgn_model(a.height, "cuda")
    batch = to_detgn_inputs(synthetic_batch(a.images, a.height, a.width))
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-4, momentum=0.9)
    loader = iter(lambda: batch, None)
    trainer = SimpleTrainer(model, loader, opt) if a.amp == "none" else AMPTrainer(model, loader, opt, dtype="bfloat16", device_type="cuda")
    trainer.start_iter, trainer.max_iter = 0, 10 ** 6
    trainer.flush_period = 10 ** 6  # count the steps between flushes (a flush adds one all-reduce and one copy per LOG_PERIOD)

    def bare_step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.amp == "bf16"):
            loss = sum(model(batch).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def count(fn):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            torch.cuda.synchronize()
        sites = collections.Counter(f"{os.path.relpath(w.filename)}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
        return sum(sites.values()), sites

    with EventStorage(0) as trainer.storage:
        for i in range(2):  # warm-up (first-call allocations and lazy inits synchronise)
            trainer.iter = trainer.storage.iter = i + 1
            trainer.run_step()
            bare_step()
        for name, fn in (("trainer.run_step", trainer.run_step), ("bare step", bare_step)):
            totals = []
            for s in range(a.steps):
                trainer.iter = trainer.storage.iter = 10 + s
                n, sites = count(fn)
                totals.append(n)
            print(f"{name}: {totals} synchronisations per step ({a.images} x {a.height}x{a.width}, amp {a.amp}); top sites:")
            for site, k in sites.most_common(8):
                print(f"    {k:4d}  {site}")


if __name__ == "__main__":
    main()
