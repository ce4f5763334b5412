"""Side-by-side timing: detgn's GN Mask R-CNN vs torchvision's Mask R-CNN with the same GN architecture.

Same process, same threads, same synthetic input (N images of HxW with 8 boxes/masks each); the
two models' steps are interleaved so that drift of a shared machine affects both alike.
Train step = forward + backward + SGD step. Inference = eval forward with 100 detections
(score threshold 0 in both so the mask head and pasting run on 100 boxes).

    python benchmarks/compare_torchvision.py --size 512 --images 2 --iters 5 [--amp bf16] [--device cpu]
    python benchmarks/compare_torchvision.py --height 800 --width 1333 --device cuda --amp fp16
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.peers import build_torchvision_gn_maskrcnn, synthetic_batch, to_detgn_inputs, to_torchvision_inputs  # noqa: E402
from detgn.config import get_cfg  # noqa: E402
from detgn.engine.precision import cpu_description, cpu_model  # noqa: E402
from detgn.modeling import build_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def detgn_model(size, device, score_thresh=0.0, memory_format="contiguous"):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml"))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    cfg.MODEL.MEMORY_FORMAT = memory_format
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = score_thresh
    return build_model(cfg)


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tv_to_device(images, targets, device):
    """torchvision's reference training loop: move images (float, 0-1) and targets to the device each step."""
    return (
        [i.to(device, non_blocking=True) for i in images],
        [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets],
    )


def _detgn_to_device(inputs, device):
    return [
        {**x, "image": x["image"].to(device), **({"instances": x["instances"].to(device)} if "instances" in x else {})}
        for x in inputs
    ]


def _make_steps(name, model, d_inputs, tv_images, tv_targets, autocast, amp_dtype, dev_type, device=None):
    """The same hand-written step for both models (detgn's trainer cannot drive torchvision's model, and a
    comparison must time the same sequence on both; tools/benchmark.py times detgn's own trainer)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler(dev_type) if amp_dtype == torch.float16 else None

    def ctx():
        return autocast() if autocast else torch.autocast(dev_type, enabled=False)

    def train_step():
        model.train()
        with ctx():
            losses = (
                model(d_inputs) if name == "detgn" else model(*_tv_to_device(tv_images, tv_targets, device or dev_type))
            )
            loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def infer():
        model.eval()
        with torch.no_grad(), ctx():
            model(d_inputs) if name == "detgn" else model(_tv_to_device(tv_images, [], device or dev_type)[0])

    return {"train": train_step, "infer": infer}


def bench(height, width, images, iters, warmup, amp, device, memory_format="contiguous", inputs="host"):
    """Median-ready step times. inputs="host": each step starts from host tensors for both models (detgn
    moves them inside its forward, torchvision's step moves them first, as its reference train loop does);
    "device": both models get device-resident inputs, so no copy is timed."""
    torch.manual_seed(0)
    batch = synthetic_batch(images, height, width)
    dev_type = device.split(":")[0]
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    autocast = (lambda: torch.autocast(device_type=dev_type, dtype=amp_dtype)) if amp_dtype else None
    results = {}

    d = detgn_model(min(height, width), device, memory_format=memory_format)
    tv = build_torchvision_gn_maskrcnn(80, min_size=min(height, width), score_thresh=0.0).to(device)
    d_inputs = to_detgn_inputs(batch)
    tv_images, tv_targets = to_torchvision_inputs(batch, "cpu")
    if inputs == "device":
        d_inputs = _detgn_to_device(d_inputs, device)
        tv_images, tv_targets = _tv_to_device(tv_images, tv_targets, device)
    steps = {}
    for name, model in (("detgn", d), ("torchvision", tv)):
        steps[name] = _make_steps(name, model, d_inputs, tv_images, tv_targets, autocast, amp_dtype, dev_type, device)
    # interleave the two models step by step so that drift of a shared machine hits both alike
    for task in ("train", "infer"):
        for _ in range(warmup):
            for name in steps:
                steps[name][task]()
        _sync(device)
        for name in steps:
            results[(name, task)] = []
        for _ in range(iters):
            for name in steps:
                t = time.perf_counter()
                steps[name][task]()
                _sync(device)
                results[(name, task)].append(time.perf_counter() - t)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="square input side in pixels (unless --height/--width)")
    ap.add_argument("--height", type=int, default=None, help="input height in pixels")
    ap.add_argument("--width", type=int, default=None, help="input width in pixels")
    ap.add_argument("--images", type=int, default=2, help="images per batch")
    ap.add_argument("--iters", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=2, help="untimed warm-up iterations")
    ap.add_argument(
        "--amp", choices=["none", "bf16", "fp16"], default="none", help="autocast dtype (fp16: CUDA, with loss scaling)"
    )
    ap.add_argument("--json", default=None, help="append the medians as a JSON line to this file")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument(
        "--memory-format",
        default="contiguous",
        choices=["channels_last", "contiguous"],
        help="detgn's MODEL.MEMORY_FORMAT (torchvision's model stays in its default NCHW)",
    )
    ap.add_argument(
        "--inputs",
        default="host",
        choices=["host", "device"],
        help="host: every step copies its inputs to the device (both models, as in training); "
        "device: inputs already on the device (no copy timed)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = False
    h, w = args.height or args.size, args.width or args.size
    res = bench(h, w, args.images, args.iters, args.warmup, args.amp, args.device, args.memory_format, args.inputs)
    name = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu: {cpu_model()} ({cpu_description()})"
    )
    print(
        f"device={args.device} ({name}) input={h}x{w} images={args.images} amp={args.amp} threads={args.threads} "
        f"iters={args.iters} detgn memory format={args.memory_format} inputs on {args.inputs}"
    )
    print(f"{'task':8s} {'detgn s':>10s} {'torchvision s':>14s} {'ratio':>7s}   (median; min-max)")
    for task in ("train", "infer"):
        a, b = res[("detgn", task)], res[("torchvision", task)]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{task:8s} {ma:10.3f} {mb:14.3f} {ma / mb:7.3f}   detgn {min(a):.3f}-{max(a):.3f}; tv {min(b):.3f}-{max(b):.3f}"
        )
        if args.json:
            import json

            with open(args.json, "a") as f:
                f.write(
                    json.dumps(
                        {
                            "device": name,
                            "input": [h, w],
                            "images": args.images,
                            "amp": args.amp,
                            "task": task,
                            "inputs": args.inputs,
                            "detgn_s": ma,
                            "torchvision_s": mb,
                            "ratio": ma / mb,
                        }
                    )
                    + "\n"
                )
    if args.device.startswith("cuda"):
        print(f"peak CUDA memory (both models, this process): {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
