"""How close gradient accumulation comes to more processes: the figures behind tests/engine/test_accumulation_equivalence.py.

    python benchmarks/accumulation_equivalence.py [--output DIR] [--steps 3]

Trains the test's narrow GN Mask R-CNN (nuclei_mini, random flip, two sizes, random ROI / anchor sampling; CPU
processes on gloo, 1 thread each) from the same initial weights as 1 process x 2 micro-batches, 2 processes x 1 image,
2 processes x 2 micro-batches and 4 processes x 1 image, and resumes the 4-process checkpoint of step 1 as
2 processes x 2 micro-batches. Prints, per comparison: identical tensors, ||a - b|| / ||b - init|| over all weights,
max|a - b| / max|b - init| over all weights, and the largest relative difference of a logged loss.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=None, help="folder for the runs (default: a temporary one, removed)")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps of each run (>= 3: the resume starts at 2)")
    args = ap.parse_args(argv)
    import torch

    from detgn.config import get_cfg
    from detgn.modeling import build_model
    from tests.engine import test_accumulation_equivalence as t

    root = args.output or tempfile.mkdtemp(prefix="accumulation_")
    os.makedirs(root, exist_ok=True)
    t.ARGS[t.ARGS.index("SOLVER.MAX_ITER") + 1] = str(args.steps)
    cfg = get_cfg()
    cfg.merge_from_file(t.QUICK)
    cfg.merge_from_list(t.SMALL_MODEL)
    torch.manual_seed(0)
    init = build_model(cfg).state_dict()
    torch.save({"model": init}, os.path.join(root, "init.pth"))
    w = ["MODEL.WEIGHTS", os.path.join(root, "init.pth")]
    acc = ["SOLVER.IMS_PER_DEVICE", "1"]
    p = os.path.join
    t._wait(
        t._start(p(root, "1x2"), *w, "SOLVER.IMS_PER_BATCH", "2", *acc),
        t._start(p(root, "2x1"), "--num-gpus", "2", *w, "SOLVER.IMS_PER_BATCH", "2"),
    )
    t._wait(
        t._start(p(root, "2x2"), "--num-gpus", "2", *w, "SOLVER.IMS_PER_BATCH", "4", *acc),
        t._start(p(root, "4x1"), "--num-gpus", "4", *w, "SOLVER.IMS_PER_BATCH", "4"),
    )
    resumed = p(root, "resumed")
    os.makedirs(resumed, exist_ok=True)
    shutil.copy(p(root, "4x1", "model_0000001.pth"), resumed)
    with open(p(resumed, "last_checkpoint"), "w") as f:
        f.write("model_0000001.pth")
    t._wait(t._start(resumed, "--num-gpus", "2", "--resume", "SOLVER.IMS_PER_BATCH", "4", *acc))

    def losses_diff(a, b):
        worst = 0.0
        ra = {r["iteration"]: r for r in t._rows(a)}
        for r in t._rows(b):
            if r["iteration"] in ra:
                for k in t.LOSSES:
                    worst = max(worst, abs(ra[r["iteration"]][k] - r[k]) / max(abs(r[k]), 1e-30))
        return worst

    print(f"{args.steps} steps; torch threads 1 per process; machine: ", end="")
    from detgn.engine.precision import cpu_description, cpu_model

    print(f"{cpu_model()} ({cpu_description()})")
    print(
        "| comparison | identical tensors | diff / update (norms) | largest diff / largest update | logged losses, max rel. diff |"
    )
    print("|---|---|---|---|---|")
    for a, b, label in (
        ("1x2", "2x1", "1 process x 2 micro-batches vs 2 processes x 1 image"),
        ("2x2", "4x1", "2 processes x 2 micro-batches vs 4 processes x 1 image"),
        ("resumed", "4x1", "4-process checkpoint (step 1) resumed as 2 x 2 vs 4 processes"),
    ):
        wa, wb = t._weights(p(root, a)), t._weights(p(root, b))
        same = sum(torch.equal(wa[k], wb[k]) for k in wb)
        of_update, of_weights = t._differences(wa, wb, init)
        print(
            f"| {label} | {same}/{len(wb)} | {of_update:.2g} | {of_weights:.2g} | "
            f"{losses_diff(p(root, a), p(root, b)):.2g} |"
        )
    print(json.dumps({"output": root}))
    if args.output is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
