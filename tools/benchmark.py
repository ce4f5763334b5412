#!/usr/bin/env python
"""Steady-state speed of training, inference or the data loader, on synthetic or real inputs.

    python tools/benchmark.py --config-file CFG --task train|eval|data [--device cpu|cuda] [--amp]
        [--size 800 --max-size 1333] [--images 2] [--iters 10] [--warmup 3] [--real] [KEY VALUE ...]

Prints, one unit per line: seconds per iteration and per image (median, min, max), images per
second and peak memory in MB (CPU: max RSS of this process; CUDA: max allocated). --size resizes synthetic inputs to
that short side (default: INPUT.MIN_SIZE_TEST); --real uses DATASETS.TRAIN through the mapper.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.utils.errors import ConfigValueError, UserInputError  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    ap.add_argument("--task", choices=["train", "eval", "data"], required=True, help="what to time")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: MODEL.DEVICE, cpu without CUDA)")
    ap.add_argument(
        "--amp",
        action="store_true",
        help="autocast: bf16 on CPU, SOLVER.AMP.DTYPE on CUDA (same as --precision bf16 on CPU)",
    )
    ap.add_argument(
        "--precision",
        choices=["fp32", "auto", "bf16", "fp16"],
        default=None,
        help="fp32 (default), auto (the SOLVER.AMP.DTYPE auto policy for this machine), bf16 or fp16",
    )
    ap.add_argument("--size", type=int, default=None, help="short side of synthetic images (pixels)")
    ap.add_argument(
        "--max-size", type=int, default=None, help="long side of synthetic images (default: size * 1333 / 800)"
    )
    ap.add_argument("--images", type=int, default=2, help="images per iteration")
    ap.add_argument("--iters", type=int, default=10, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=3, help="untimed warm-up iterations")
    ap.add_argument("--real", action="store_true", help="real images from DATASETS.TRAIN instead of synthetic ones")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", default=None, help="append the result as a JSON line to this file")
    ap.add_argument(
        "--calibrate-bn",
        type=int,
        default=0,
        metavar="N",
        help="with BN norms: estimate BN statistics from N train-mode forwards on the inputs, then freeze "
        "every BN (the 'frozen BN' model of a randomly initialised network, numerically sane)",
    )
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return ap.parse_args(argv)


def _peak_memory(device):
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _synthetic(cfg, n, size, max_size, seed=0):
    from benchmarks.peers import synthetic_batch, to_detgn_inputs

    h = size
    w = max_size or int(round(size * 1333 / 800))
    return to_detgn_inputs(synthetic_batch(n, h, w, seed=seed, num_classes=cfg.MODEL.ROI_HEADS.NUM_CLASSES))


def _calibrate_and_freeze_bn(model, batches, n):
    """Cumulative BN statistics over n train-mode forwards, then BN -> FrozenBN everywhere."""
    import torch

    from detgn.layers import FrozenBatchNorm2d

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        raise ConfigValueError("--calibrate-bn needs BN layers (set the norms to BN)")
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(n):
            model(batches[i % len(batches)])
    FrozenBatchNorm2d.convert_frozen_batchnorm(model)


def run(args):
    import torch

    from detgn.jobs import setup_cfg_or_exit
    from detgn.modeling import build_model

    cfg = setup_cfg_or_exit(args)  # every value checked, one line and exit status 2 for a bad one
    device = args.device or ("cuda" if cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available() else "cpu")
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""
    if args.threads:
        torch.set_num_threads(args.threads)
    if device == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.cuda.reset_peak_memory_stats()
    from detgn.engine.precision import cpu_description, cpu_model, log_precision, resolve_precision

    if args.precision is None:
        args.precision = (
            ("bf16" if device == "cpu" else {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.SOLVER.AMP.DTYPE, "auto"))
            if args.amp
            else "fp32"
        )
    dtype_key = {"fp32": "auto", "auto": "auto", "bf16": "bfloat16", "fp16": "float16"}[args.precision]
    precision = resolve_precision(args.precision != "fp32", dtype_key, device)
    log_precision(precision, "benchmark")
    amp_dtype = precision.dtype
    args.amp = amp_dtype is not None
    times, warm = [], []  # timed iterations; warm-up iterations (the first one includes torch.compile's compilation)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    if args.task == "data":
        from detgn.data import build_detection_train_loader

        cfg.SOLVER.IMS_PER_BATCH = args.images
        loader = iter(build_detection_train_loader(cfg, seed=0))
        for i in range(args.warmup + args.iters):
            t = time.perf_counter()
            next(loader)
            (times if i >= args.warmup else warm).append(time.perf_counter() - t)
        per_img = [t / args.images for t in times]
    else:
        torch.manual_seed(0)
        model = build_model(cfg)
        if args.real:
            from detgn.data import build_detection_train_loader

            cfg.SOLVER.IMS_PER_BATCH = args.images
            loader = iter(build_detection_train_loader(cfg, seed=0))
            batches = [next(loader) for _ in range(min(args.iters + args.warmup, 8))]
        else:
            size = args.size or cfg.INPUT.MIN_SIZE_TEST
            batches = [_synthetic(cfg, args.images, size, args.max_size, seed=s) for s in range(2)]
        ctx = (
            (lambda: torch.autocast(device_type=device, dtype=amp_dtype))
            if amp_dtype
            else (lambda: torch.autocast(device_type=device, enabled=False))
        )
        if args.calibrate_bn:
            _calibrate_and_freeze_bn(model, batches, args.calibrate_bn)
        if (
            args.task == "train"
        ):  # the training loop's own step (SimpleTrainer / AMPTrainer.run_step), finite checks included
            import itertools

            from detgn.engine import AMPTrainer, SimpleTrainer
            from detgn.solver import build_optimizer
            from detgn.utils.events import EventStorage

            opt = build_optimizer(cfg, model)
            loader = itertools.cycle(batches)
            if amp_dtype is None:
                trainer = SimpleTrainer(model, loader, opt)
            else:
                trainer = AMPTrainer(
                    model,
                    loader,
                    opt,
                    dtype="float16" if amp_dtype == torch.float16 else "bfloat16",
                    device_type=device,
                )
            trainer.start_iter, trainer.max_iter = (
                0,
                args.warmup + args.iters,
            )  # flushes (losses to the host) as in training
            with EventStorage(0) as trainer.storage:
                for i in range(args.warmup + args.iters):
                    trainer.iter = trainer.storage.iter = i
                    sync()
                    t = time.perf_counter()
                    trainer.run_step()
                    sync()
                    (times if i >= args.warmup else warm).append(time.perf_counter() - t)
            per_img = [t / args.images for t in times]
        else:
            model.eval()
            with torch.no_grad():
                for i in range(args.warmup + args.iters):
                    data = [{k: v for k, v in d.items() if k != "instances"} for d in batches[i % len(batches)]]
                    sync()
                    t = time.perf_counter()
                    with ctx():
                        model(data)
                    sync()
                    (times if i >= args.warmup else warm).append(time.perf_counter() - t)
            per_img = [t / args.images for t in times]
    med = statistics.median(times)
    result = {
        "task": args.task,
        "device": device,
        "amp": bool(args.amp),
        "images": args.images,
        "iters": args.iters,
        "size": args.size,
        "median_s_per_iter": med,
        "min_s": min(times),
        "max_s": max(times),
        "median_s_per_img": statistics.median(per_img),
        "images_per_s": args.images / med,
        "peak_mem_mb": _peak_memory(device),
        "threads": torch.get_num_threads(),
        "config": args.config_file,
        "precision": precision.name,
        "cpu": f"{cpu_model()} ({cpu_description()})",
        "warmup_s": warm,
        "compiled_parts": list(cfg.MODEL.COMPILE.PARTS),
        "checkpointed_parts": list(cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS),
        "opts": list(args.opts),
    }
    return result


def format_result(r) -> str:
    """The result as labelled lines, one unit per figure (median and range always in the same unit)."""
    per_iter = [r["median_s_per_iter"], r["min_s"], r["max_s"]]
    per_img = [v / r["images"] for v in per_iter]
    where = r["cpu"] if r["device"] == "cpu" else "cuda"
    return "\n".join(
        [
            f"{r['task']} on {r['device']} ({where}), {r['precision']}, {r['images']} images per iteration, "
            f"{r['iters']} timed iterations, {r['threads']} threads",
            f"  seconds per iteration: median {per_iter[0]:.4f}  (min {per_iter[1]:.4f}, max {per_iter[2]:.4f})",
            f"  seconds per image:     median {per_img[0]:.4f}  (min {per_img[1]:.4f}, max {per_img[2]:.4f})",
            f"  images per second:     {r['images_per_s']:.2f} (at the median)",
            f"  peak memory (MB):      {r['peak_mem_mb']:.0f} ({'max RSS of the process' if r['device'] == 'cpu' else 'CUDA max allocated'})",
        ]
        + (
            [
                f"  warm-up (s):           {', '.join(f'{t:.2f}' for t in r['warmup_s'])} (not in the figures above"
                + (f"; includes compiling {', '.join(r['compiled_parts'])})" if r.get("compiled_parts") else ")")
            ]
            if r.get("warmup_s")
            else []
        )
    )


def main(argv=None):
    args = parse_args(argv)
    try:
        r = run(args)
    except (UserInputError, FloatingPointError) as e:  # bad config/data/weights, or a diverging step
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_result(r))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
