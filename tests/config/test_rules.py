"""Every numeric config key given 0, -1 and a value of the wrong type is refused by name when the config
is read (jobs.setup_cfg, before anything starts), or accepted where the value means something (listed)."""

import argparse

import pytest

from detgn.config import UNSUPPORTED_KEYS, get_cfg, get_classifier_cfg
from detgn.config.rules import RELATIONS, RULES, check_config, rules_table
from detgn.jobs import ConfigError, setup_cfg

from .test_every_key import _leaves


NUMERIC = [
    k
    for k, v in _leaves(get_classifier_cfg())  # the detector's keys and the classifier's
    if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in UNSUPPORTED_KEYS
]

# where 0 or -1 is a meaningful value (defaults.py says what it means)
ZERO_OK = {
    "MODEL.BACKBONE.FREEZE_AT",
    "SOLVER.IMS_PER_DEVICE",
    "MODEL.ANCHOR_GENERATOR.OFFSET",
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE",
    "MODEL.RPN.BOUNDARY_THRESH",
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT",
    "MODEL.RPN.SMOOTH_L1_BETA",
    "MODEL.RPN.LOSS_WEIGHT",
    "MODEL.RPN.POSITIVE_FRACTION",
    "MODEL.RPN.NMS_THRESH",
    "MODEL.ROI_HEADS.POSITIVE_FRACTION",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT",
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA",
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "MODEL.ROI_BOX_HEAD.NUM_CONV",
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO",
    "MODEL.ROI_MASK_HEAD.NUM_CONV",
    "INPUT.MIN_SIZE_TEST",
    "DATALOADER.NUM_WORKERS",
    "SOLVER.BASE_LR_END",
    "SOLVER.WEIGHT_DECAY",
    "SOLVER.WEIGHT_DECAY_NORM",
    "SOLVER.BIAS_LR_FACTOR",
    "SOLVER.BACKBONE_LR_FACTOR",
    "SOLVER.BACKBONE_WEIGHT_DECAY_FACTOR",
    "SOLVER.WEIGHT_DECAY_EMBED",
    "MODEL_EMA.WARMUP_ITERS",
    "SOLVER.WARMUP_FACTOR",
    "SOLVER.WARMUP_ITERS",
    "SOLVER.MAX_TO_KEEP",
    "SOLVER.REFERENCE_WORLD_SIZE",
    "TEST.EVAL_PERIOD",
    "TEST.VIS_PERIOD_IMAGES",
    "TEST.VIS_SCORE_THRESH",
    "CLASSIFIER.NUM_CLASSES",
    "CLASSIFIER.EPOCHS",
    "CLASSIFIER.LR_REFERENCE_BATCH",
    "SEED",
    "SOLVER.MOMENTUM",
    "DATALOADER.REPEAT_THRESHOLD",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH",
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT",
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
}
MINUS1_OK = {"MODEL.RPN.BOUNDARY_THRESH", "SEED"}


def _setup(opts, num_gpus=1):
    args = argparse.Namespace(config_file="", opts=list(opts), num_gpus=num_gpus, num_machines=1, eval_only=False)
    return setup_cfg(args, get_classifier_cfg)


def test_every_numeric_key_is_in_the_table():
    assert NUMERIC and set(NUMERIC) <= set(RULES), sorted(set(NUMERIC) - set(RULES))


@pytest.mark.parametrize("key", NUMERIC)
def test_zero_minus_one_and_wrong_type(key):
    for value, ok in (("0", key in ZERO_OK), ("-1", key in MINUS1_OK)):
        if ok:
            _setup([key, value])
        else:
            with pytest.raises(ConfigError, match=f"^{key} = .*: must be"):
                _setup([key, value])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _setup([key, "'not a number'"])


@pytest.mark.parametrize(
    "opts, key",
    [
        (["MODEL.DEVICE", "gpu"], "MODEL.DEVICE"),
        (["TEST.EVALUATOR_BACKEND", "bogus"], "TEST.EVALUATOR_BACKEND"),
        (["SOLVER.BASE_LR", "1e400"], "SOLVER.BASE_LR"),
        (["SOLVER.STEPS", "(300, 200)"], "SOLVER.STEPS"),
        (["MODEL.RPN.IOU_THRESHOLDS", "[0.3]"], "MODEL.RPN.IOU_LABELS"),
        (["MODEL.GROUP_NORM.NUM_GROUPS", "24", "MODEL.FPN.NORM", "GN"], "MODEL.GROUP_NORM.NUM_GROUPS"),
        (["MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "True"], "SOLVER.AMP.DTYPE"),
        (["MODEL.RESNETS.DEPTH", "51"], "MODEL.RESNETS.DEPTH"),
        (["OUTPUT_DIR", "''"], "OUTPUT_DIR"),
    ],
)
def test_values_and_relations_refused_by_name(opts, key):
    with pytest.raises(ConfigError, match=f"^{key.replace('.', '[.]')} = "):
        _setup(opts)


def test_batch_divisible_by_processes():
    _setup(["SOLVER.IMS_PER_BATCH", "4"], num_gpus=2)
    with pytest.raises(ConfigError, match="SOLVER.IMS_PER_BATCH = 3: must be divisible by the number of processes .2."):
        _setup(["SOLVER.IMS_PER_BATCH", "3"], num_gpus=2)


def test_defaults_pass_and_table_lists_every_rule():
    check_config(get_cfg())
    table = rules_table()
    assert all(f"`{k}`" in table for k in RULES) and all(d in table for d, _ in RELATIONS)


@pytest.mark.parametrize("text, words", [("", "the file is empty"), ("- a\n- b\n", "got list"), ("3\n", "got int")])
def test_config_file_that_is_not_a_mapping(tmp_path, text, words):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    args = argparse.Namespace(config_file=str(f), opts=[])
    with pytest.raises(ConfigError, match=words):
        setup_cfg(args)


def test_docs_list_the_rules_as_they_are():
    import os

    docs = open(os.path.join(os.path.dirname(__file__), "..", "..", "docs", "config_rules.md")).read()
    assert rules_table() in docs, "docs/config_rules.md is stale: regenerate with python -m detgn.config.rules"
