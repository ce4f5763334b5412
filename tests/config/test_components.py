"""config/components.py: a component brings its keys, defaults, rules and unsupported values in one config function.

The made-up component runs in a subprocess: registering rules is global to a process, and the suite's other tests
(the docs/config_rules.md copy among them) must see detgn's own components only."""

import json
import subprocess
import sys
import textwrap

from detgn.config import get_cfg
from detgn.config.components import config_functions
from detgn.config.rules import OWNERS
from tests.util import QUICK, REPO

# one file: a box head in the registry, and the config function that owns MODEL.TWIN_FC_HEAD.*
COMPONENT = """
from torch import nn

from detgn.config import configurable
from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import ge
from detgn.layers import ShapeSpec
from detgn.modeling.roi_heads.box_head import ROI_BOX_HEAD_REGISTRY


def _dims_ordered(c):
    h = c.MODEL.TWIN_FC_HEAD
    return None if h.SECOND_DIM <= h.FIRST_DIM else ("MODEL.TWIN_FC_HEAD.SECOND_DIM", h.SECOND_DIM, "at most FIRST_DIM")


@config_function(
    rules={"MODEL.TWIN_FC_HEAD.FIRST_DIM": ge(1), "MODEL.TWIN_FC_HEAD.SECOND_DIM": ge(1)},
    relations=[("twin head: the second layer no wider than the first", _dims_ordered)],
    unsupported={"MODEL.TWIN_FC_HEAD.DROPOUT": "dropout between the layers"},
)
def add_twin_fc_head_config(cfg):
    cfg.MODEL.TWIN_FC_HEAD = CN()
    cfg.MODEL.TWIN_FC_HEAD.FIRST_DIM = 32  # first fully connected layer
    cfg.MODEL.TWIN_FC_HEAD.SECOND_DIM = 16  # second one
    cfg.MODEL.TWIN_FC_HEAD.DROPOUT = 0.0  # not implemented: must stay 0


@ROI_BOX_HEAD_REGISTRY.register()
class TwinFCHead(nn.Sequential):
    @configurable
    def __init__(self, input_shape, *, first_dim, second_dim):
        c = input_shape.channels * input_shape.height * input_shape.width
        super().__init__(nn.Flatten(), nn.Linear(c, first_dim), nn.ReLU(), nn.Linear(first_dim, second_dim), nn.ReLU())
        self.output_shape = ShapeSpec(channels=second_dim)

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.TWIN_FC_HEAD
        return dict(input_shape=input_shape, first_dim=h.FIRST_DIM, second_dim=h.SECOND_DIM)
"""

SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import twin_head  # the component registers itself, as detgn.modeling's modules do
from types import SimpleNamespace
from detgn.config.rules import rules_table
from detgn.jobs import ConfigError, setup_cfg
from detgn.modeling import build_model

def args(*opts):
    return SimpleNamespace(config_file=sys.argv[2], opts=list(opts))

out = {}
cfg = setup_cfg(args("MODEL.ROI_BOX_HEAD.NAME", "TwinFCHead", "MODEL.DEVICE", "cpu", "MODEL.TWIN_FC_HEAD.FIRST_DIM", "24"))
model = build_model(cfg)
out["head"] = type(model.roi_heads.box_head).__name__
out["fc"] = [m.out_features for m in model.roi_heads.box_head if hasattr(m, "out_features")]
out["predictor_in"] = model.roi_heads.box_predictor.cls_score.in_features
for name, opts in {
    "rule": ("MODEL.TWIN_FC_HEAD.FIRST_DIM", "0"),
    "relation": ("MODEL.TWIN_FC_HEAD.SECOND_DIM", "64"),
    "unsupported": ("MODEL.TWIN_FC_HEAD.DROPOUT", "0.5"),
    "typo": ("MODEL.TWIN_FC_HEAD.FIRST_DIMS", "8"),
}.items():
    try:
        setup_cfg(args(*opts))
        out[name] = None
    except ConfigError as e:
        out[name] = str(e)
out["table"] = rules_table()
try:
    from detgn.config.components import config_function
    from detgn.config.rules import ge
    config_function(rules={"MODEL.TWIN_FC_HEAD.FIRST_DIM": ge(2)})(lambda cfg: None)
    out["twice"] = None
except ValueError as e:
    out["twice"] = str(e)
print(json.dumps(out))
"""


def test_a_component_brings_its_keys_rules_and_unsupported_values_in_one_function(tmp_path):
    (tmp_path / "twin_head.py").write_text(textwrap.dedent(COMPONENT))
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), QUICK], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["head"] == "TwinFCHead" and out["fc"] == [24, 16] and out["predictor_in"] == 16
    assert out["rule"] == "MODEL.TWIN_FC_HEAD.FIRST_DIM = 0: must be an integer >= 1"
    assert out["relation"] == "MODEL.TWIN_FC_HEAD.SECOND_DIM = 64: must be at most FIRST_DIM"
    assert out["unsupported"].startswith("MODEL.TWIN_FC_HEAD.DROPOUT = 0.5: detgn does not implement dropout between")
    assert "its default 0.0" in out["unsupported"]
    assert "MODEL.TWIN_FC_HEAD.FIRST_DIMS" in out["typo"]  # a typo in the component's keys: refused by name
    assert "Registered by `twin_head.add_twin_fc_head_config`:" in out["table"]
    assert "- twin head: the second layer no wider than the first" in out["table"]
    assert "registers rules that are checked already" in out["twice"]


def test_cascade_is_the_built_in_example():
    """Cascade's keys are added by its own config function in modeling/roi_heads/cascade_rcnn.py, their rules and
    relations registered with it; the classifier's by a function get_cfg does not apply."""
    from detgn.modeling.roi_heads.cascade_rcnn import add_cascade_config

    assert add_cascade_config in config_functions()
    owner = "detgn.modeling.roi_heads.cascade_rcnn.add_cascade_config"
    assert OWNERS["MODEL.ROI_BOX_CASCADE_HEAD.IOUS"] == owner
    assert OWNERS["Cascade: one set of 4 box-regression weights per stage"] == owner
    assert get_cfg().MODEL.ROI_BOX_CASCADE_HEAD.IOUS == (0.5, 0.6, 0.7)
    assert "CLASSIFIER" not in get_cfg() and OWNERS["CLASSIFIER.EPOCHS"].endswith("add_classifier_config")
    assert "_C.MODEL.ROI_BOX_CASCADE_HEAD" not in open(f"{REPO}/detgn/config/defaults.py").read()
