#!/usr/bin/env python
"""The GN paper's batch-size result on your machine: the quick-start detector trained from scratch with
BN (per-worker statistics) and GN at 1, 2 and 4 images per worker, optionally SyncBN over 2 processes,
for the same number of images seen, each evaluated with COCO AP on the bundled nuclei data.

    python tools/norm_study.py                        # BN and GN x 1, 2, 4 images per worker
    python tools/norm_study.py --syncbn               # + SyncBN across 2 processes (gloo on CPU)
    python tools/norm_study.py --accumulate           # + BN and GN with each step of N images as N micro-batches of 1
    python tools/norm_study.py --quick                # tiny settings, about a minute: checks the machinery only

Every cell is tools/train_net.py on configs/nuclei_quickstart.yaml with all four norms (backbone, FPN,
box head, mask head) set to the cell's norm, SOLVER.IMS_PER_BATCH = images per worker x workers, the
iterations = --images-seen / IMS_PER_BATCH, the LR scaled linearly with the batch (--lr-per-image), the
LR step and warm-up at the quick start's fractions of the schedule, and SEED 0. BN normalises with each
worker's own batch (as in the paper's BN rows); SyncBN computes the statistics over both processes'
images (NaiveSyncBN on CPU, where torch's SyncBatchNorm does not run; SyncBN on CUDA). With --accumulate, a step of
N images is N micro-batches of 1 image (SOLVER.IMS_PER_DEVICE 1): GN's model is then the N-image batch's (its
statistics are per image anyway), BN normalises each image alone, as with a batch of 1.

Writes OUTPUT/cells/<norm>_<workers>x<images>/ (train_net's output, and result.json when the cell is
done), OUTPUT/results.json (every cell's AP and time), OUTPUT/norm_study.md (the table) and
OUTPUT/norm_study.png (AP against images per worker, one line per norm, as the paper's Figure 1).
Resumable: a finished cell is not rerun, an interrupted one continues from its last checkpoint.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CONFIG = os.path.join(REPO, "configs", "nuclei_quickstart.yaml")
NORM_KEYS = ("MODEL.RESNETS.NORM", "MODEL.FPN.NORM", "MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_MASK_HEAD.NORM")
# --quick: a small model on small images, a few iterations: it exercises every step, it measures nothing
QUICK_OPTS = [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "128",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
    "INPUT.MIN_SIZE_TRAIN",
    "(96,)",
    "INPUT.MAX_SIZE_TRAIN",
    "160",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "160",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "50",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
    "DATALOADER.NUM_WORKERS",
    "0",
]


def cells(norms: List[str], ims: List[int], syncbn: bool, accumulate: bool = False) -> List[Dict]:
    """The grid: {"norm": label, "layer": the NORM value, "workers", "ims", "per_device"} per cell, in run order.
    ims = images per worker per optimizer step; per_device = images per forward (micro-batch), None = all of them."""
    out = [{"norm": n, "layer": n, "workers": 1, "ims": i, "per_device": None} for n in norms for i in ims]
    if syncbn:
        out += [{"norm": "SyncBN", "layer": None, "workers": 2, "ims": i, "per_device": None} for i in ims]
    if accumulate:  # the same steps, each as micro-batches of 1 image (gradient accumulation)
        out += [{"norm": n, "layer": n, "workers": 1, "ims": i, "per_device": 1} for n in norms for i in ims if i > 1]
    return out


def cell_name(cell) -> str:
    micro = f"_micro{cell['per_device']}" if cell.get("per_device") else ""
    return f"{cell['norm']}_{cell['workers']}x{cell['ims']}{micro}"


def row_label(cell) -> str:
    """The table's and the plot's name of a cell's row."""
    label = cell["norm"] + ("" if cell["workers"] == 1 else f" ({cell['workers']} processes)")
    if cell.get("per_device"):
        label += f", micro-batches of {cell['per_device']}"
    return label


def cell_overrides(cell, images_seen: int, lr_per_image: float, out_dir: str, quick: bool, device: str) -> List[str]:
    """train_net KEY VALUE overrides of one cell: norm everywhere, batch, iterations for the image budget, scaled LR."""
    batch = cell["ims"] * cell["workers"]
    iters = max(images_seen // batch, 1)
    layer = cell["layer"] or ("SyncBN" if device.startswith("cuda") else "NaiveSyncBN")
    opts = [x for key in NORM_KEYS for x in (key, layer)]
    opts += [
        "SOLVER.IMS_PER_BATCH",
        str(batch),
        "SOLVER.IMS_PER_DEVICE",
        str(cell.get("per_device") or 0),
        "SOLVER.MAX_ITER",
        str(iters),
        "SOLVER.BASE_LR",
        f"{lr_per_image * batch:g}",
        "SOLVER.STEPS",
        f"({int(round(iters * 250 / 300))},)",
        "SOLVER.WARMUP_ITERS",
        str(int(round(iters * 50 / 300))),
        "SOLVER.CHECKPOINT_PERIOD",
        str(max(iters // 3, 1)),
        "SOLVER.MAX_TO_KEEP",
        "1",
        "TEST.VIS_PERIOD_IMAGES",
        "0",
        "TEST.EVAL_PERIOD",
        "0",
        "SEED",
        "0",
        "MODEL.DEVICE",
        device,
        "OUTPUT_DIR",
        out_dir,
    ]
    return (QUICK_OPTS if quick else []) + opts


def _final_metrics(cell_dir: str) -> Dict[str, float]:
    """The last evaluation row of a cell's metrics.json (null -> NaN), {} when there is none."""
    path = os.path.join(cell_dir, "metrics.json")
    if not os.path.isfile(path):
        return {}
    rows = [json.loads(line) for line in open(path) if line.strip()]
    evals = [r for r in rows if "segm/AP" in r or "bbox/AP" in r]
    return {k: (float("nan") if v is None else v) for k, v in evals[-1].items()} if evals else {}


def run_cell(cell, args, root: str) -> Dict:
    """Train and evaluate one cell (or read its result.json when it is done); returns its result."""
    cell_dir = os.path.join(root, "cells", cell_name(cell))
    done = os.path.join(cell_dir, "result.json")
    if os.path.isfile(done):
        print(f"[{cell_name(cell)}] done before; not rerun", flush=True)
        return json.load(open(done))
    resume = os.path.isfile(os.path.join(cell_dir, "last_checkpoint"))
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "train_net.py"),
        "--config-file",
        CONFIG,
        "--num-gpus",
        str(cell["workers"]),
    ]
    # always --resume: a cell stopped before its first checkpoint (only metrics.json) starts afresh in its own folder
    cmd += ["--resume"] + cell_overrides(cell, args.images_seen, args.lr_per_image, cell_dir, args.quick, args.device)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(args.threads // cell["workers"], 1)))
    print(f"[{cell_name(cell)}] {'resuming' if resume else 'training'}: {' '.join(cmd[1:])}", flush=True)
    started = time.time()
    r = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(
            f"cell {cell_name(cell)} failed (exit status {r.returncode}); see {cell_dir}/log.txt\n{r.stderr[-2000:]}"
        )
    m = _final_metrics(cell_dir)
    result = dict(
        cell,
        name=cell_name(cell),
        seconds=round(time.time() - started, 1),
        resumed=resume,
        segm_AP=m.get("segm/AP"),
        bbox_AP=m.get("bbox/AP"),
        segm_AP50=m.get("segm/AP50"),
        bbox_AP50=m.get("bbox/AP50"),
        iterations=max(args.images_seen // (cell["ims"] * cell["workers"]), 1),
    )
    from detgn.utils.atomic import atomic_write

    with atomic_write(done) as f:
        json.dump(result, f, indent=1)
    print(
        f"[{cell_name(cell)}] segm AP {result['segm_AP']:.2f}, bbox AP {result['bbox_AP']:.2f} in {result['seconds']:.0f} s",
        flush=True,
    )
    return result


def _fmt(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.1f}"


def write_table(results: List[Dict], path: str, header: str) -> None:
    ims = sorted({r["ims"] for r in results})
    rows = []
    for label in dict.fromkeys(row_label(r) for r in results):
        by_ims = {r["ims"]: r for r in results if row_label(r) == label}
        rows.append(
            f"| {label} | "
            + " | ".join(
                f"{_fmt(by_ims[i]['segm_AP'])} / {_fmt(by_ims[i]['bbox_AP'])}" if i in by_ims else "-" for i in ims
            )
            + " |"
        )
    lines = [
        header,
        "",
        "segm AP / bbox AP (COCO AP, percent) on nuclei_mini_val (12 images)",
        "",
        "| norm | " + " | ".join(f"{i} image{'s' if i > 1 else ''} per worker and step" for i in ims) + " |",
        "|---|" + "---|" * len(ims),
    ] + rows
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(results: List[Dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    styles = {"BN": ("C0", "s"), "GN": ("C3", "o"), "SyncBN": ("C2", "^")}
    for ax, task in zip(axes, ("segm", "bbox")):
        for label in dict.fromkeys(row_label(r) for r in results):
            rs = sorted((r for r in results if row_label(r) == label), key=lambda r: r["ims"])
            color, marker = styles.get(rs[0]["norm"], ("C7", "x"))
            ax.plot(
                [r["ims"] for r in rs],
                [r[f"{task}_AP"] for r in rs],
                marker=marker,
                color=color,
                label=label,
                linewidth=2,
                linestyle="--" if rs[0].get("per_device") else "-",
                markerfacecolor="none" if rs[0].get("per_device") else color,
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["ims"] for r in results}), [str(i) for i in sorted({r["ims"] for r in results})])
        ax.set_xlabel("images per worker and optimizer step")
        ax.set_title(f"{task} AP")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("COCO AP (%)")
    axes[0].legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=os.path.join("output", "norm_study"), help="folder of the study (resumable)")
    ap.add_argument(
        "--norms", nargs="+", default=["BN", "GN"], choices=["BN", "GN"], help="per-worker norms to compare"
    )
    ap.add_argument("--ims", nargs="+", type=int, default=[1, 2, 4], help="images per worker")
    ap.add_argument("--syncbn", action="store_true", help="add a SyncBN row: 2 processes, statistics over both")
    ap.add_argument(
        "--accumulate",
        action="store_true",
        help="add a row per norm whose steps of N > 1 images are N micro-batches of 1 image (gradient accumulation)",
    )
    ap.add_argument("--images-seen", type=int, default=600, help="training images per cell (the quick start's 300 x 2)")
    ap.add_argument(
        "--lr-per-image", type=float, default=0.01, help="LR per image of the batch (the quick start's 0.02 at 2)"
    )
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 2, help="CPU threads per cell, split among its processes"
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny model, images and budget (--images-seen 8): checks the machinery"
    )
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.quick and args.images_seen == ap.get_default("images_seen"):
        args.images_seen = 8
    if any(i < 1 for i in args.ims) or args.images_seen < max(args.ims) * (2 if args.syncbn else 1):
        print("error: --ims must be >= 1 and --images-seen at least one batch of the largest cell", file=sys.stderr)
        return 2
    root = os.path.abspath(args.output)
    os.makedirs(root, exist_ok=True)
    from detgn.engine.precision import cpu_description, cpu_model

    started = time.time()
    try:
        results = [run_cell(c, args, root) for c in cells(args.norms, args.ims, args.syncbn, args.accumulate)]
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.device == "cpu":
        machine = f"{cpu_model()} ({cpu_description()}), {args.threads} threads"
    else:
        import torch

        machine = f"{torch.cuda.get_device_name()} ({args.device})" if torch.cuda.is_available() else args.device
    total = sum(r["seconds"] for r in results)
    header = (
        f"# Norm study{' (--quick: machinery check, not a measurement)' if args.quick else ''}\n\n"
        f"{args.images_seen} training images per cell, LR {args.lr_per_image:g} x batch, from scratch, SEED 0; "
        f"{machine}; cells trained in {total / 60:.1f} min in all (this call: {(time.time() - started) / 60:.1f} min).\n"
        f"Command: python tools/norm_study.py {' '.join(argv if argv is not None else sys.argv[1:])}"
    )
    with open(os.path.join(root, "results.json"), "w") as f:
        json.dump(
            {"machine": machine, "images_seen": args.images_seen, "lr_per_image": args.lr_per_image, "cells": results},
            f,
            indent=1,
        )
    write_table(results, os.path.join(root, "norm_study.md"), header)
    write_plot(
        results,
        os.path.join(root, "norm_study.png"),
        f"Mask R-CNN R-18-FPN from scratch, {args.images_seen} images seen per cell, LR linear in batch; {machine}",
    )
    print(open(os.path.join(root, "norm_study.md")).read())
    print(f"plot: {os.path.join(root, 'norm_study.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
