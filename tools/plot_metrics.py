#!/usr/bin/env python
"""Plot losses, learning rate and evaluation AP from OUTPUT_DIR/metrics.json into PNG files.

    python tools/plot_metrics.py OUTPUT_DIR [--log-scale auto|on|off] [--window 20]

Losses are drawn raw (faint) with their running median over --window iterations; --log-scale auto
uses a log y-axis when they span more than two decades. Needs matplotlib (pip install matplotlib).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.utils.plot_metrics import plot_metrics  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("output_dir", help="a training output folder (holds metrics.json)")
    ap.add_argument("--log-scale", choices=["auto", "on", "off"], default="auto", help="log y-axis for the losses")
    ap.add_argument("--window", type=int, default=20, help="iterations of the running median over the losses")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.window < 1:
        print("error: --window must be at least 1", file=sys.stderr)
        return 2
    try:
        for p in plot_metrics(
            args.output_dir, log_scale={"auto": None, "on": True, "off": False}[args.log_scale], window=args.window
        ):
            print(p)
    except (FileNotFoundError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
