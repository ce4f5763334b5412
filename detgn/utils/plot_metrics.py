"""Plots of a training run's metrics.json (losses, learning rate, evaluation AP) as PNG files.

Used by tools/train_net.py at the end of training and by tools/plot_metrics.py. Needs matplotlib.
"""
import json
import os
from collections import defaultdict
from typing import List

__all__ = ["read_metrics", "plot_metrics"]


def read_metrics(path: str):
    """metrics.json (one JSON record per line) -> {metric name: [(iteration, value), ...]}; cut lines are skipped."""
    series = defaultdict(list)
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            it = rec.get("iteration")
            for k, v in rec.items():
                if k != "iteration" and isinstance(v, (int, float)):
                    series[k].append((it, v))
    return series


def plot_metrics(output_dir: str) -> List[str]:
    """Write losses.png, lr.png and ap.png (when present) next to metrics.json; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = os.path.join(output_dir, "metrics.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found (is {output_dir} a training output folder?)")
    s = read_metrics(path)
    written = []
    groups = {
        "losses.png": [k for k in s if "loss" in k],
        "lr.png": [k for k in s if k == "lr"],
        "ap.png": [k for k in s if k.endswith(("/AP", "/AP50", "/AP75"))],
    }
    for fname, keys in groups.items():
        if not keys:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in sorted(keys):
            xs, ys = zip(*s[k])
            ax.plot(xs, ys, label=k, marker="o" if len(xs) < 5 else None)
        ax.set_xlabel("iteration")
        ax.set_title(fname[:-4])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        out = os.path.join(output_dir, fname)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written
