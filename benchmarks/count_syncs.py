"""Host synchronisations per training step on CUDA: detgn's trainer step (SimpleTrainer/AMPTrainer.run_step,
no flush: the losses stay on the GPU) and, for comparison, the bare forward+backward+SGD step of the same model.

    python benchmarks/count_syncs.py [--height 800 --width 1333 --images 2] [--amp none|bf16] [--steps 3]

torch.cuda.set_sync_debug_mode("warn") makes every synchronising call (`.item()`, `nonzero`, a copy to the
host, ...) emit a warning; the warnings of each step are counted and grouped by the source line that caused
them.

`--device cpu` counts without a GPU: a TorchDispatchMode records every operator that would wait for the GPU on
CUDA (reading a scalar: `.item()`/`int()`/`bool()`; outputs whose size depends on values: `nonzero`, boolean-mask
indexing, `masked_select`, `unique`, NMS, ...), grouped by the first detgn source line on the stack. A proxy: it
cannot see device-to-host copies (everything is on the host) and counts what CUDA's debug mode would count for
those operators. Numbers from either mode go to docs/benchmarks.md with the mode named.
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
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument(
        "--config-file", default=None, help="count this config's model instead of the R50-FPN GN one (synthetic inputs)"
    )
    a = p.parse_args()
    if a.device == "cpu":
        return count_on_cpu(a)
    if not torch.cuda.is_available():
        print("count_syncs: no CUDA device here; nothing to count (--device cpu counts the operators that would sync)")
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
    trainer = (
        SimpleTrainer(model, loader, opt)
        if a.amp == "none"
        else AMPTrainer(model, loader, opt, dtype="bfloat16", device_type="cuda")
    )
    trainer.start_iter, trainer.max_iter = 0, 10**6
    trainer.runner.flush_period = (
        10**6
    )  # count the steps between flushes (a flush adds one all-reduce and one copy per LOG_PERIOD)

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
        sites = collections.Counter(
            f"{os.path.relpath(w.filename)}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
        )
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
            print(
                f"{name}: {totals} synchronisations per step ({a.images} x {a.height}x{a.width}, amp {a.amp}); top sites:"
            )
            for site, k in sites.most_common(8):
                print(f"    {k:4d}  {site}")


# operators whose CUDA implementation waits for the device: a scalar read, or an output sized by the data
_SYNC_OPS = {
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::masked_select",
    "aten::_unique2",
    "aten::unique_dim",
    "aten::unique_consecutive",
    "aten::equal",
    "aten::is_nonzero",
    "torchvision::nms",
    "aten::masked_scatter_",
    "aten::repeat_interleave",
}


def _is_bool_index(func, args):
    name = func.name()
    if name not in ("aten::index.Tensor", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"):
        return False
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (indices or []))


class SyncOpCounter:
    """Context manager counting, by detgn source line, the operators that would synchronise on CUDA (see the
    module docstring); `sites` is a Counter of "path:line (operator)"."""

    def __init__(self):
        import traceback

        from torch.utils._python_dispatch import TorchDispatchMode

        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.sites = sites = collections.Counter()

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.name().split(".")[0] if func.name().startswith("aten::") else func.name()
                if name in _SYNC_OPS or _is_bool_index(func, args):
                    site = "?"
                    for frame in reversed(traceback.extract_stack()[:-1]):
                        if os.path.join(repo, "detgn") in frame.filename:
                            site = f"{os.path.relpath(frame.filename, repo)}:{frame.lineno} ({name})"
                            break
                    sites[site] += 1
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def count_on_cpu(a):
    from benchmarks.compare_torchvision import detgn_model
    from benchmarks.peers import synthetic_batch, to_detgn_inputs
    from detgn.engine import SimpleTrainer
    from detgn.utils.events import EventStorage

    Counter = SyncOpCounter
    torch.manual_seed(0)
    if a.config_file:
        from detgn.config import get_cfg
        from detgn.modeling import build_model

        cfg = get_cfg()
        cfg.merge_from_file(a.config_file)
        cfg.MODEL.WEIGHTS, cfg.MODEL.DEVICE = "", "cpu"
        model = build_model(cfg)
        classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    else:
        model, classes = detgn_model(a.height, "cpu"), 80
    batch = to_detgn_inputs(synthetic_batch(a.images, a.height, a.width, num_classes=classes))
    opt = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1e-4, momentum=0.9)
    trainer = SimpleTrainer(model, iter(lambda: batch, None), opt)
    trainer.start_iter, trainer.max_iter = 0, 10**6
    trainer.runner.flush_period = 10**6
    with EventStorage(0) as trainer.storage:
        trainer.iter = trainer.storage.iter = 1
        trainer.run_step()
        totals = []
        for s in range(a.steps):
            trainer.iter = trainer.storage.iter = 10 + s
            with Counter() as c:
                trainer.run_step()
            totals.append(sum(c.sites.values()))
        model.eval()
        with torch.no_grad(), Counter() as ci:
            model([{k: v for k, v in d.items() if k != "instances"} for d in batch])
    print(
        f"cpu proxy, trainer.run_step: {totals} operators per step that synchronise on CUDA "
        f"({a.images} x {a.height}x{a.width}, {a.config_file or 'R50-FPN GN'}); by site (last step):"
    )
    for site, k in c.sites.most_common(25):
        print(f"    {k:4d}  {site}")
    print(f"cpu proxy, inference of the batch: {sum(ci.sites.values())}; by site:")
    for site, k in ci.sites.most_common(12):
        print(f"    {k:4d}  {site}")


if __name__ == "__main__":
    main()
