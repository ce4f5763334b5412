import ast
import os

import pytest
import yaml

from detgn.config import ConfigKeyError, get_cfg

from tests.util import REPO

# detectron2's configs/Misc/mask_rcnn_R_50_FPN_3x_gn.yaml, written as users have it.
D2_GN_YAML = """\
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  WEIGHTS: "catalog://ImageNetPretrained/FAIR/R-50-GN"
  MASK_ON: True
  RESNETS:
    DEPTH: 50
    NORM: "GN"
    STRIDE_IN_1X1: False
  FPN:
    NORM: "GN"
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_CONV: 4
    NUM_FC: 1
    NORM: "GN"
  ROI_MASK_HEAD:
    NORM: "GN"
SOLVER:
  # 3x schedule
  STEPS: (210000, 250000)
  MAX_ITER: 270000
"""


def _uncommented(src: str):
    """Key assignments (`X.Y = value`) in `src` whose last line has no comment (a new node `= CN()` needs none)."""
    lines = src.splitlines()
    missing = []
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute):
            line = lines[node.lineno - 1 if node.end_lineno is None else node.end_lineno - 1]
            if "CN()" in line and "#" not in line:
                continue
            if "#" not in line:
                missing.append(line.strip())
    return missing


def test_defaults_have_comments():
    import inspect
    import textwrap

    from detgn.config.components import config_functions

    missing = _uncommented(open(os.path.join(REPO, "detgn", "config", "defaults.py")).read())
    functions = config_functions() + config_functions(by_default=False)
    assert len(functions) >= 2  # the Cascade heads' and the classifier's
    for fn in functions:
        missing += _uncommented(textwrap.dedent(inspect.getsource(fn)))
    assert not missing, f"config keys without a comment: {missing}"


def test_base_chain_two_levels(tmp_path):
    (tmp_path / "a.yaml").write_text("SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\nMODEL:\n  MASK_ON: True\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text('_BASE_: "../a.yaml"\nSOLVER:\n  MAX_ITER: 20\n')
    (tmp_path / "sub" / "c.yaml").write_text('_BASE_: "b.yaml"\nSOLVER:\n  IMS_PER_BATCH: 3\n')
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "sub" / "c.yaml"))
    assert cfg.SOLVER.BASE_LR == 0.5 and cfg.SOLVER.MAX_ITER == 20 and cfg.SOLVER.IMS_PER_BATCH == 3
    assert cfg.MODEL.MASK_ON is True
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.02", "MODEL.RESNETS.NORM", "GN"])
    assert cfg.SOLVER.BASE_LR == 0.02 and cfg.MODEL.RESNETS.NORM == "GN"


def test_misspelt_key_in_yaml_names_close_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("MODEL:\n  RESNETS:\n    NROM: GN\n")
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError) as e:
        cfg.merge_from_file(str(tmp_path / "bad.yaml"))
    msg = str(e.value)
    assert "MODEL.RESNETS.NROM" in msg and "MODEL.RESNETS.NORM" in msg
    assert "\n" not in msg


def test_misspelt_key_on_command_line():
    cfg = get_cfg()
    with pytest.raises(ConfigKeyError) as e:
        cfg.merge_from_list(["SOLVER.BASE_LRR", "0.1"])
    assert "SOLVER.BASE_LR" in str(e.value)
    with pytest.raises(ValueError):
        cfg.merge_from_list(["SOLVER.BASE_LR"])


def test_detectron2_gn_yaml_loads_unchanged(tmp_path):
    (tmp_path / "Misc").mkdir()
    base = open(os.path.join(REPO, "configs", "Base-RCNN-FPN.yaml")).read()
    (tmp_path / "Base-RCNN-FPN.yaml").write_text(base)
    (tmp_path / "Misc" / "mask_rcnn_R_50_FPN_3x_gn.yaml").write_text(D2_GN_YAML)
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "Misc" / "mask_rcnn_R_50_FPN_3x_gn.yaml"))
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.FPN.NORM == "GN"
    assert cfg.MODEL.ROI_BOX_HEAD.NUM_CONV == 4 and cfg.MODEL.ROI_BOX_HEAD.NUM_FC == 1
    assert cfg.MODEL.ROI_MASK_HEAD.NORM == "GN" and cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.SOLVER.MAX_ITER == 270000 and tuple(cfg.SOLVER.STEPS) == (210000, 250000)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (640, 672, 704, 736, 768, 800)


def test_dump_roundtrip(tmp_path):
    cfg = get_cfg()
    cfg.SOLVER.BASE_LR = 0.123
    p = tmp_path / "dumped.yaml"
    p.write_text(cfg.dump())
    cfg2 = get_cfg()
    cfg2.merge_from_file(str(p))
    assert cfg2.SOLVER.BASE_LR == 0.123
    assert yaml.safe_load(cfg.dump())["MODEL"]["GROUP_NORM"]["NUM_GROUPS"] == 32


def test_configurable_explicit_kwargs_override_from_config():
    from detgn.layers import ShapeSpec
    from detgn.modeling.roi_heads.mask_head import MaskRCNNConvUpsampleHead

    cfg = get_cfg()
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 64
    head = MaskRCNNConvUpsampleHead(cfg, ShapeSpec(channels=32), num_classes=7, conv_dims=[16, 16, 8])
    assert head.predictor.out_channels == 7 and head.mask_fcn1.out_channels == 16 and head.deconv.out_channels == 8
    assert not hasattr(head, "mask_fcn3")
    plain = MaskRCNNConvUpsampleHead(cfg, input_shape=ShapeSpec(channels=32))  # from_config arguments by keyword too
    assert plain.mask_fcn1.out_channels == 64 and plain.predictor.out_channels == cfg.MODEL.ROI_HEADS.NUM_CLASSES
