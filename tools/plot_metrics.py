#!/usr/bin/env python
"""Plot losses, learning rate and evaluation AP from OUTPUT_DIR/metrics.json into PNG files.

    python tools/plot_metrics.py OUTPUT_DIR

Needs matplotlib (optional dependency: pip install matplotlib).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.utils.plot_metrics import plot_metrics  # noqa: E402


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
