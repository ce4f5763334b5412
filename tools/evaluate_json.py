#!/usr/bin/env python
"""Evaluate a COCO results file against COCO ground truth, without a model.

    python tools/evaluate_json.py --gt instances_val2017.json --results coco_instances_results.json --type bbox segm

Prints the 12 COCO summary numbers per type (AP in percent; `nan` where COCOeval has nothing to
average, e.g. APl without large objects, as in the training log). Both files are checked first
(missing keys, duplicate image ids, NaN/Inf scores or boxes, RLEs that do not cover their image,
results for unknown images or categories): a bad file exits with status 2 and one line naming it.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.utils.errors import UserInputError  # noqa: E402


class EvaluateInputError(UserInputError, ValueError):
    """A ground-truth or results file that is missing or not what COCOeval needs."""


STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def evaluate_json(gt_file: str, results_file: str, types=("bbox",), backend: str = "hotcoco"):
    """-> {type: [12 summary numbers as COCOeval gives them: fractions, -1 where undefined]}."""
    from detgn.evaluation.coco_evaluation import evaluate_predictions_on_coco
    from detgn.evaluation.coco_inputs import check_results, load_checked_coco_gt

    for path in (gt_file, results_file):
        if not os.path.isfile(path):
            raise EvaluateInputError(f"File not found: {path}")
    gt = load_checked_coco_gt(gt_file)
    try:
        results = json.load(open(results_file))
    except json.JSONDecodeError as e:
        raise EvaluateInputError(f"Malformed json in {results_file}: {e.msg} at line {e.lineno}") from e
    if not isinstance(results, list):
        raise EvaluateInputError(f"{results_file} must hold a list of COCO result dicts")
    out = {}
    for t in types:
        if t not in ("bbox", "segm"):
            raise EvaluateInputError(f"--type must be bbox and/or segm, got '{t}'")
        res = [r for r in results if t == "bbox" or not isinstance(r, dict) or "segmentation" in r]
        check_results(res, gt, t, source=results_file)
        if not res:
            from detgn.evaluation.coco_evaluation import empty_results_stats

            print(
                f"warning: {results_file} has no {t} results: AP/AR 0 where the ground truth has objects, nan where it "
                "has none",
                file=sys.stderr,
            )
            out[t] = empty_results_stats(gt)
            continue
        ev = evaluate_predictions_on_coco(gt, res, t, backend=backend)
        out[t] = [float(x) for x in ev.stats]
    return out


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gt", required=True, help="COCO instances json (ground truth)")
    ap.add_argument("--results", required=True, help="COCO results json (list of detections)")
    ap.add_argument("--type", nargs="+", default=["bbox"], choices=["bbox", "segm"], help="IoU types to evaluate")
    ap.add_argument(
        "--backend",
        default="hotcoco",
        choices=["hotcoco", "faster_coco_eval", "pycocotools"],
        help="COCOeval implementation (default hotcoco, as TEST.EVALUATOR_BACKEND; the same numbers)",
    )
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        stats = evaluate_json(args.gt, args.results, args.type, args.backend)
    except (UserInputError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from detgn.evaluation.coco_evaluation import coco_stat_to_percent, format_metric

    for t, s in stats.items():
        print(f"{t}: " + "  ".join(f"{n} {format_metric(coco_stat_to_percent(v))}" for n, v in zip(STAT_NAMES, s)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
