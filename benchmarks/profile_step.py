"""Where a training step spends its time: detgn vs torchvision's same-architecture GN Mask R-CNN.

For each model: the forward time of each top-level stage (device synchronised at the stage's
edges, so kernels are charged to the stage that launched them), then torch.profiler's busiest
operators of whole training steps (self device time and self CPU time), and the step's wall time
against its summed kernel time (kernel time well below wall time = the step is bound by the CPU
that launches the kernels, not by the device).

    python benchmarks/profile_step.py --device cuda --height 800 --width 1333 --images 2
    python benchmarks/profile_step.py --device cpu --height 256 --width 256 --top 10
"""

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.compare_torchvision import _make_steps, _sync, detgn_model  # noqa: E402
from benchmarks.peers import build_torchvision_gn_maskrcnn, synthetic_batch, to_detgn_inputs, to_torchvision_inputs  # noqa: E402

STAGES = {
    "detgn": [
        "backbone",
        "proposal_generator",
        "roi_heads.box_pooler",
        "roi_heads.box_head",
        "roi_heads.box_predictor",
        "roi_heads.mask_pooler",
        "roi_heads.mask_head",
        "roi_heads",
    ],
    "torchvision": [
        "backbone",
        "rpn",
        "roi_heads.box_roi_pool",
        "roi_heads.box_head",
        "roi_heads.box_predictor",
        "roi_heads.mask_roi_pool",
        "roi_heads.mask_head",
        "roi_heads",
    ],
}


def stage_times(model, stages, step, device, iters):
    """Median forward seconds per named submodule over `iters` calls of `step` (sum over calls within a step)."""
    times = defaultdict(list)
    current = defaultdict(float)
    starts = {}
    handles = []
    for name in stages:
        mod = model.get_submodule(name)

        def pre(_m, _i, name=name):
            _sync(device)
            starts[name] = time.perf_counter()

        def post(_m, _i, _o, name=name):
            _sync(device)
            current[name] += time.perf_counter() - starts[name]

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    try:
        for _ in range(iters):
            current.clear()
            _sync(device)
            t = time.perf_counter()
            step()
            _sync(device)
            times["(whole step)"].append(time.perf_counter() - t)
            for k, v in current.items():
                times[k].append(v)
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--height", type=int, default=800)
    ap.add_argument("--width", type=int, default=1333)
    ap.add_argument("--images", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="profiled / timed training steps per model")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--top", type=int, default=20, help="operators listed per table")
    ap.add_argument("--task", choices=["train", "infer"], default="train")
    args = ap.parse_args()
    dev = args.device
    if dev.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(0)
    batch = synthetic_batch(args.images, args.height, args.width)
    d = detgn_model(min(args.height, args.width), dev)
    tv = build_torchvision_gn_maskrcnn(80, min_size=min(args.height, args.width), score_thresh=0.0).to(dev)
    d_inputs = to_detgn_inputs(batch)
    tv_images, tv_targets = to_torchvision_inputs(batch, dev)
    dev_type = dev.split(":")[0]
    for name, model in (("detgn", d), ("torchvision", tv)):
        step = _make_steps(name, model, d_inputs, tv_images, tv_targets, None, None, dev_type)[args.task]
        for _ in range(3):
            step()
        st = stage_times(model, STAGES[name], step, dev, args.iters)
        print(f"\n=== {name}: {args.task} step, {args.images} x {args.height}x{args.width}, {dev} ===")
        print("forward stage times (median s, synchronised at stage edges; 'roi_heads' includes the rows above it):")
        for k, v in st.items():
            print(f"  {k:28s} {v:8.4f}")
        acts = [torch.profiler.ProfilerActivity.CPU]
        if dev_type == "cuda":
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        _sync(dev)
        t = time.perf_counter()
        with torch.profiler.profile(activities=acts) as prof:
            for _ in range(args.iters):
                step()
            _sync(dev)
        wall = (time.perf_counter() - t) / args.iters
        ka = prof.key_averages()
        if dev_type == "cuda":
            kern = sum(e.self_device_time_total for e in ka) / 1e6 / args.iters
            print(
                f"profiled: wall {wall:.4f} s/step, summed device kernel time {kern:.4f} s/step "
                f"({100 * kern / wall:.0f}% of wall)"
            )
            print(ka.table(sort_by="self_cuda_time_total", row_limit=args.top, max_name_column_width=60))
        print(ka.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=60))


if __name__ == "__main__":
    main()
