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


def tool_module(name: str):
    """tools/<name>.py imported as a module (tools/ is not a package), without leaving tools/ on sys.path."""
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, TOOLS)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(TOOLS)
