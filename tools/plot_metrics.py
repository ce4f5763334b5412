#!/usr/bin/env python
"""Plot losses, learning rate and evaluation AP from OUTPUT_DIR/metrics.json into PNG files.

    python tools/plot_metrics.py OUTPUT_DIR

Needs matplotlib (optional dependency: pip install matplotlib).
"""
import json
import os
import sys
from collections import defaultdict
from typing import List


def read_metrics(path: str):
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        for p in plot_metrics(argv[0]):
            print(p)
    except (FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
