"""Plots of a training run's metrics.json (losses, learning rate, evaluation AP) as PNG files.

- losses.png: every loss term against the iteration, the raw values faint and their running median
  (the smoothing detectron2's console and TensorBoard users read) drawn over them; a log y-axis when
  asked, or by default when the plotted values span more than two decades.
- lr.png: the learning rate schedule.
- accuracy.png: top-1 / top-5 accuracy (percent) per evaluation of tools/train_classifier.py.
- ap.png: AP / AP50 / AP75 (percent) per evaluation. With one evaluation there is no curve to draw:
  bars of that evaluation's AP, AP50, AP75, APs/APm/APl (those defined) and per-category AP instead,
  and the title says so.

Used by tools/train_net.py at the end of training and by tools/plot_metrics.py. Needs matplotlib.
Undefined metrics (null in metrics.json) are not plotted.
"""

import json
import math
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["read_metrics", "plot_metrics", "running_median", "ap_tasks"]


def read_metrics(path: str) -> Dict[str, List[Tuple[int, float]]]:
    """metrics.json (one JSON record per line) -> {metric name: [(iteration, value), ...]}; cut lines
    and null (undefined) values are skipped."""
    series = defaultdict(list)
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            it = rec.get("iteration")
            for k, v in rec.items():
                if k != "iteration" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    series[k].append((it, v))
    return series


def running_median(values: Sequence[float], window: int) -> np.ndarray:
    """Median of the last `window` values at each position (fewer at the start), as the console's losses."""
    v = np.asarray(values, dtype=np.float64)
    return np.array([np.median(v[max(0, i - window + 1) : i + 1]) for i in range(len(v))])


def _wants_log(series: List[np.ndarray]) -> bool:
    vals = np.concatenate(series) if series else np.zeros(0)
    vals = vals[vals > 0]
    return vals.size > 1 and vals.max() / vals.min() > 100


def _plot_losses(plt, s, keys, out, window, log_scale):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    smoothed = []
    for idx, k in enumerate(sorted(keys, key=lambda k: (k != "total_loss", k))):
        xs, ys = zip(*s[k])
        med = running_median(ys, window)
        color = f"C{idx % 10}"
        ax.plot(xs, ys, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(xs, med, color=color, linewidth=2.2 if k == "total_loss" else 1.4, label=k)
        smoothed.append(med)
    use_log = _wants_log(smoothed) if log_scale is None else log_scale
    if use_log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (unitless)" + (", log scale" if use_log else ""))
    ax.set_title(f"training losses: running median of {window} iterations (bold), raw values (faint)")
    ax.grid(alpha=0.3, which="both" if use_log else "major")
    ax.legend(fontsize=7, ncol=2)
    _save(fig, out)


def _plot_lr(plt, s, out):
    fig, ax = plt.subplots(figsize=(8, 3.5))
    xs, ys = zip(*s["lr"])
    ax.plot(xs, ys)
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title("learning rate schedule")
    ax.grid(alpha=0.3)
    _save(fig, out)


def ap_tasks(s) -> List[str]:
    """The evaluated tasks with an AP series ("bbox", or "dataset/bbox" with several test sets). A one-test-set run
    stores both "bbox/AP" and "<dataset>/bbox/AP" (the same numbers): the dataset-prefixed twin is left out."""
    tasks = {k.rsplit("/", 1)[0] for k in s if k.endswith("/AP")}
    return sorted(t for t in tasks if not ("/" in t and t.split("/", 1)[1] in tasks))


def _plot_ap(plt, s, out):
    tasks = ap_tasks(s)
    curves = [f"{t}/{m}" for t in tasks for m in ("AP", "AP50", "AP75") if f"{t}/{m}" in s]
    evaluations = max(len(s[k]) for k in curves)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if evaluations > 1:
        for k in curves:
            xs, ys = zip(*s[k])
            ax.plot(xs, ys, label=k, marker="o", markersize=3)
        ax.set_xlabel("iteration")
        ax.set_title(f"evaluation AP ({evaluations} evaluations)")
        ax.legend(fontsize=7)
    else:  # one evaluation: a curve would be a lone dot; show the numbers of that evaluation as bars
        it = s[curves[0]][-1][0]
        cats = sorted({k.split("/AP-", 1)[1] for k in s if "/AP-" in k})
        overall = [
            m for m in ("AP", "AP50", "AP75", "APs", "APm", "APl") if any(f"{t}/{m}" in s for t in tasks)
        ]  # defined ones
        labels = overall + ([f"AP {c}" for c in cats] if len(cats) > 1 else [])
        width = 0.8 / max(len(tasks), 1)
        x = np.arange(len(labels))
        for j, t in enumerate(tasks):
            keys = [f"{t}/{m}" for m in overall] + ([f"{t}/AP-{c}" for c in cats] if len(cats) > 1 else [])
            vals = [s[k][-1][1] if k in s else float("nan") for k in keys]
            bars = ax.bar(x + (j - (len(tasks) - 1) / 2) * width, vals, width, label=t)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(x, labels, rotation=30 if len(labels) > 6 else 0, fontsize=8)
        ax.set_title(
            f"AP at iteration {it}: one evaluation, so no curve (TEST.EVAL_PERIOD > 0 evaluates during training)",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    ax.set_ylabel("AP (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3, axis="y")
    _save(fig, out)


def _plot_accuracy(plt, s, keys, out):
    fig, ax = plt.subplots(figsize=(8, 4))
    for k in keys:
        xs, ys = zip(*s[k])
        ax.plot(xs, ys, marker="o", markersize=4, label=k)
        ax.annotate(f"{ys[-1]:.1f}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    n = max(len(s[k]) for k in keys)
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"classification accuracy ({n} evaluation{'s' if n > 1 else ''})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out)


def _save(fig, out):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_metrics(output_dir: str, log_scale: Optional[bool] = None, window: int = 20) -> List[str]:
    """Write losses.png, lr.png and ap.png (each when its metrics are present) next to metrics.json.

    log_scale: None picks a log y-axis for the losses when they span more than two decades; True/False force it.
    window: iterations of the running median drawn over the raw losses. Returns the paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (is {output_dir} a training output folder?)")
    s = read_metrics(path)
    written = []
    losses = [k for k in s if "loss" in k]
    if losses:
        written.append(os.path.join(output_dir, "losses.png"))
        _plot_losses(plt, s, losses, written[-1], window, log_scale)
    if "lr" in s:
        written.append(os.path.join(output_dir, "lr.png"))
        _plot_lr(plt, s, written[-1])
    if any(k.endswith("/AP") for k in s):
        written.append(os.path.join(output_dir, "ap.png"))
        _plot_ap(plt, s, written[-1])
    accuracy = sorted(k for k in s if k.endswith(("/top1", "/top5")))
    if accuracy:
        written.append(os.path.join(output_dir, "accuracy.png"))
        _plot_accuracy(plt, s, accuracy, written[-1])
    return written
