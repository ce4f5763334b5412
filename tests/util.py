"""What every test module shares: the repository root and the tools as importable modules."""

import importlib
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
# a few iterations of the GN Mask R-CNN on the bundled nuclei data (configs/quick_schedules)
QUICK = os.path.join(REPO, "configs", "quick_schedules", "mask_rcnn_R_50_FPN_gn_instant_test.yaml")


# A narrow GN Mask R-CNN: ResNet-18, 64-channel FPN, box and mask heads (still GN everywhere, 4conv1fc box head,
# 4-conv mask head). The one list of these overrides; each test adds what it needs (FC_DIM, ROIs, proposals).
NARROW_MODEL = [
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "MODEL.FPN.OUT_CHANNELS",
    "64",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "64",
]
# NARROW_MODEL with a 128-wide box head fc: what the tool tests train and run
TINY_MODEL = NARROW_MODEL + ["MODEL.ROI_BOX_HEAD.FC_DIM", "128"]


# tools/train_net.py arguments of the one finished run that several tests read (the quick_run fixture, conftest.py), and of any
# later command on that run (--eval-only of its weights must use the same test sizes to give the same detections)
QUICK_RUN_ARGS = [
    "SOLVER.MAX_ITER",
    "4",
    "TEST.EVAL_PERIOD",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "100",
    "TEST.VIS_PERIOD_IMAGES",
    "1",
    "INPUT.MIN_SIZE_TEST",
    "96",
    "INPUT.MAX_SIZE_TEST",
    "160",
]


def tool_module(name: str):
    """tools/<name>.py imported as a module (tools/ is not a package), without leaving tools/ on sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, TOOLS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(TOOLS)


def run_tool_here(name: str, argv, capsys):
    """tools/<name>.py run in this process, as its command line would: main(argv) (cli(argv) for the training
    tools). Returns (status, stdout, stderr); an argparse exit is its status. Saves the ~6 s a Python process
    with torch takes to start; for tools that set up no logging of their own (train_net's refusals come first)."""
    module = tool_module(name)
    entry = getattr(module, "cli", None) or module.main
    try:
        status = entry(list(argv))
    except SystemExit as e:
        status = e.code
    captured = capsys.readouterr()
    return (0 if status is None else status), captured.out, captured.err
