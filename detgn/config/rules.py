"""The checks of config values that need the config alone: types, ranges, choices, relations between keys.

`check_config(cfg)` runs in jobs.setup_cfg (every tool) right after the YAML file and the overrides are merged,
and again in build_model, so a bad value is refused before any process starts, any data is read or anything is
written, with one line naming the key, the value and what is allowed; the builders that read a config trust it
and do not repeat these checks. yacs already refuses a value whose type differs from the default's ("Type
mismatch ... for config key: SOLVER.MAX_ITER"); these rules add what a type cannot say.

Whose rules: this module holds those of the keys in defaults.py; a component that owns its keys registers its
rules and relations with them (config/components.py: Cascade's in modeling/roi_heads/cascade_rcnn.py, the
classifier's in config/classifier.py, the C4 heads' relations in res5_roi_heads.py), and OWNERS names the owner
of each. Keys of UNSUPPORTED_KEYS are checked by supported.py. Checks that need more than the config stay
where that is known and raise ConfigValueError there: feature names against the built backbone
(modeling/backbone/backbone.py), class counts against the loaded dataset (engine/setup.py), the device and CPU
(engine/precision.py), and modules built from explicit arguments without a config validate those arguments.

The table is printed by `python -m detgn.config.rules` (docs/config_rules.md holds a copy).
"""

import math
from typing import Any, Callable, Dict, List, Optional, Tuple

from detgn.layers.norm import NORM_NAMES, gn_groups, is_norm_name
from detgn.utils.errors import ConfigValueError, short_repr

from .batch import micro_batches
from .config import get_key, has_key

__all__ = ["RULES", "RELATIONS", "OWNERS", "check_config", "register_rules", "rules_table"]


class Rule:
    """One key's constraint: `ok(value)` and the words for what is allowed."""

    def __init__(self, ok: Callable[[Any], bool], allowed: str):
        self.ok = ok
        self.allowed = allowed


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def ge(lo, integer=True) -> Rule:
    return Rule(
        lambda v: (_int(v) if integer else _num(v)) and v >= lo, f"{'an integer' if integer else 'a number'} >= {lo}"
    )


def gt(lo, integer=False) -> Rule:
    return Rule(
        lambda v: (_int(v) if integer else _num(v)) and v > lo, f"{'an integer' if integer else 'a number'} > {lo}"
    )


def between(lo, hi, lo_open=False, hi_open=False) -> Rule:
    def ok(v):
        return _num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return Rule(ok, f"a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}")


def one_of(*values) -> Rule:
    return Rule(lambda v: v in values, "one of " + ", ".join(repr(x) for x in values))


def int_or_minus1(lo=1) -> Rule:
    return Rule(lambda v: _int(v) and (v == -1 or v >= lo), f"-1 or an integer >= {lo}")


def seq(item: Rule, min_len=1, max_len=None) -> Rule:
    def ok(v):
        return isinstance(v, (list, tuple)) and min_len <= len(v) <= (max_len or len(v)) and all(item.ok(x) for x in v)

    n = f"{min_len}" if max_len == min_len else f"at least {min_len}" if max_len is None else f"{min_len} to {max_len}"
    return Rule(ok, f"a list of {n} value(s), each {item.allowed}")


def ints(lo: int, unit: str) -> Rule:
    """A possibly empty list of integers >= lo (iterations, epochs)."""
    return Rule(
        lambda v: isinstance(v, (list, tuple)) and all(_int(x) and x >= lo for x in v),
        f"a list of integers >= {lo} ({unit}), possibly empty",
    )


def seq_of_seq(item: Rule) -> Rule:
    return Rule(
        lambda v: isinstance(v, (list, tuple)) and len(v) >= 1 and all(seq(item).ok(x) for x in v),
        f"a non-empty list of non-empty lists, each value {item.allowed}",
    )


def _device(v) -> bool:
    return isinstance(v, str) and (v in ("cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()))


def _triton_ok(device: str) -> bool:
    from detgn.layers.fused_group_norm import check_fused_group_norm_available

    try:
        check_fused_group_norm_available(device)
    except ConfigValueError:
        return False
    return True


NORMS = NORM_NAMES  # layers/norm.py owns the names get_norm builds
_norm_name = is_norm_name


NORM_RULE = Rule(_norm_name, "one of " + ", ".join(repr(x) for x in NORMS) + " or 'GN(G)' (GroupNorm with G groups)")


def _gn_groups(norm: str, cfg) -> Optional[int]:
    """The groups of a component's GN layers ('GN' -> MODEL.GROUP_NORM.NUM_GROUPS, 'GN(G)' -> G), None without GN."""
    if not _norm_name(norm):
        return None
    groups = gn_groups(norm)
    if groups is None:
        return None
    return groups or cfg.MODEL.GROUP_NORM.NUM_GROUPS


# a feature map's name; which names exist is the built backbone's to say (modeling/backbone/backbone.py)
_FEATURE_NAME = Rule(lambda v: isinstance(v, str) and v != "", "a feature name")

# key -> rule. Zero is allowed only where it means something (documented in defaults.py).
RULES: Dict[str, Rule] = {
    "MODEL.DEVICE": Rule(_device, "'cpu', 'cuda' or 'cuda:N'"),
    "MODEL.PIXEL_MEAN": seq(Rule(_num, "a finite number"), 1, 4),
    "MODEL.PIXEL_STD": seq(gt(0), 1, 4),
    "MODEL.MEMORY_FORMAT": one_of("contiguous", "channels_last"),
    "MODEL.BACKBONE.FREEZE_AT": between(0, 5),
    "MODEL.GROUP_NORM.NUM_GROUPS": ge(1),
    "MODEL.GROUP_NORM.EPS": gt(0),
    "MODEL.GROUP_NORM.IMPL": one_of("torch", "triton"),
    "MODEL.COMPILE.PARTS": seq(one_of("backbone", "box_head", "mask_head"), min_len=0, max_len=3),
    "MODEL.ACTIVATION_CHECKPOINT.PARTS": seq(
        one_of("stem", "res2", "res3", "res4", "res5", "fpn", "box_head", "mask_head"), min_len=0, max_len=8
    ),
    "MODEL.COMPILE.MODE": one_of("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
    "MODEL.COMPILE.BACKEND": one_of("inductor", "aot_eager", "eager"),
    "MODEL.RESNETS.DEPTH": one_of(18, 34, 50, 101, 152),
    "MODEL.RESNETS.NUM_GROUPS": ge(1),
    "MODEL.RESNETS.NORM": NORM_RULE,
    "MODEL.RESNETS.WIDTH_PER_GROUP": ge(1),
    "MODEL.RESNETS.RES5_DILATION": one_of(1, 2),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": ge(1),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": ge(1),
    "MODEL.RESNETS.OUT_FEATURES": seq(one_of("stem", "res2", "res3", "res4", "res5")),
    "MODEL.FPN.IN_FEATURES": seq(_FEATURE_NAME),  # checked against the bottom-up's output_shape() when built
    "MODEL.FPN.OUT_CHANNELS": ge(1),
    "MODEL.FPN.NORM": NORM_RULE,
    "MODEL.FPN.FUSE_TYPE": one_of("sum", "avg"),
    "MODEL.ANCHOR_GENERATOR.SIZES": seq_of_seq(gt(0)),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": seq_of_seq(gt(0)),
    "MODEL.ANCHOR_GENERATOR.OFFSET": between(0.0, 1.0, hi_open=True),
    "MODEL.PROPOSAL_GENERATOR.MIN_SIZE": ge(0, integer=False),
    "MODEL.RPN.IN_FEATURES": seq(_FEATURE_NAME),  # checked against the backbone's output_shape() when built
    "MODEL.RPN.BOUNDARY_THRESH": Rule(lambda v: _int(v) and v >= -1, "-1 (keep all anchors) or an integer >= 0"),
    "MODEL.RPN.IOU_THRESHOLDS": seq(between(0.0, 1.0)),
    "MODEL.RPN.IOU_LABELS": seq(one_of(-1, 0, 1), 2),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": ge(1),
    "MODEL.RPN.POSITIVE_FRACTION": between(0.0, 1.0),
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": one_of("smooth_l1", "giou"),
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": ge(0, integer=False),
    "MODEL.RPN.BBOX_REG_WEIGHTS": seq(gt(0), 4, 4),
    "MODEL.RPN.SMOOTH_L1_BETA": ge(0, integer=False),
    "MODEL.RPN.LOSS_WEIGHT": ge(0, integer=False),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": ge(1),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": ge(1),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": ge(1),
    "MODEL.RPN.POST_NMS_TOPK_TEST": ge(1),
    "MODEL.RPN.NMS_THRESH": between(0.0, 1.0),
    "MODEL.RPN.CONV_DIMS": seq(int_or_minus1()),
    "MODEL.WEIGHT_STANDARDIZATION.CONVENTION": one_of("auto", "timm", "mmcv"),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": seq(Rule(lambda v: isinstance(v, bool), "True or False"), 4, 4),
    "MODEL.RESNETS.DEFORM_NUM_GROUPS": ge(1),
    "MODEL.ROI_HEADS.NUM_CLASSES": ge(1),
    "MODEL.ROI_HEADS.IN_FEATURES": seq(_FEATURE_NAME),  # checked against the backbone's output_shape() when built
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": seq(between(0.0, 1.0)),
    "MODEL.ROI_HEADS.IOU_LABELS": seq(one_of(-1, 0, 1), 2),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": ge(1),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": between(0.0, 1.0),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": between(0.0, 1.0),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": between(0.0, 1.0),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": one_of("smooth_l1", "giou"),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": ge(0, integer=False),
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": seq(gt(0), 4, 4),
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA": ge(0, integer=False),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": ge(1),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": ge(0),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": one_of("ROIAlignV2", "ROIAlign"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": ge(0),
    "MODEL.ROI_BOX_HEAD.FC_DIM": ge(1),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": ge(0),
    "MODEL.ROI_BOX_HEAD.CONV_DIM": ge(1),
    "MODEL.ROI_BOX_HEAD.NORM": NORM_RULE,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": ge(1),
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": ge(0),
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": one_of("ROIAlignV2", "ROIAlign"),
    "MODEL.ROI_MASK_HEAD.NUM_CONV": ge(0),
    "MODEL.ROI_MASK_HEAD.CONV_DIM": ge(1),
    "MODEL.ROI_MASK_HEAD.NORM": NORM_RULE,
    "INPUT.MIN_SIZE_TRAIN": seq(ge(1)),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": one_of("choice", "range"),
    "INPUT.MAX_SIZE_TRAIN": ge(1),
    "MODEL.SEM_SEG_HEAD.NAME": one_of("SemSegFPNHead"),
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": seq(_FEATURE_NAME),  # checked against the backbone's output_shape() when built
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": ge(0),
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": ge(1),
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": ge(1),
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": one_of(1, 2, 4, 8, 16, 32, 64),
    "MODEL.SEM_SEG_HEAD.NORM": NORM_RULE,
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": ge(0, integer=False),
    "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT": ge(0, integer=False),
    "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH": between(0.0, 1.0),
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT": ge(0, integer=False),
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH": between(0.0, 1.0),
    "INPUT.MIN_SIZE_TEST": ge(0),
    "INPUT.RESIZE_LIBRARY": one_of("opencv", "pil"),
    "INPUT.MAX_SIZE_TEST": ge(1),
    "INPUT.RANDOM_FLIP": one_of("horizontal", "vertical", "none"),
    "INPUT.FORMAT": one_of("BGR", "RGB"),
    "INPUT.MASK_FORMAT": one_of("polygon", "bitmask"),
    "INPUT.CROP.TYPE": one_of("relative_range", "relative", "absolute"),
    "INPUT.CROP.SIZE": seq(gt(0), 2, 2),
    "INPUT.LSJ.MIN_SCALE": gt(0),
    "INPUT.LSJ.MAX_SCALE": gt(0),
    "INPUT.LSJ.IMAGE_SIZE": ge(1),
    "DATALOADER.NUM_WORKERS": ge(0),
    "DATALOADER.SAMPLER_TRAIN": one_of("TrainingSampler", "RepeatFactorTrainingSampler"),
    "DATALOADER.REPEAT_THRESHOLD": between(0.0, 1.0),
    "SOLVER.LR_SCHEDULER_NAME": one_of("WarmupMultiStepLR", "WarmupCosineLR"),
    "SOLVER.MAX_ITER": ge(1),
    "SOLVER.BASE_LR": gt(0),
    "SOLVER.BASE_LR_END": ge(0, integer=False),
    "SOLVER.MOMENTUM": between(0.0, 1.0, hi_open=True),
    "SOLVER.WEIGHT_DECAY": ge(0, integer=False),
    "SOLVER.WEIGHT_DECAY_NORM": ge(0, integer=False),
    "SOLVER.WEIGHT_DECAY_BIAS": Rule(
        lambda v: v is None or (_num(v) and v >= 0), "None (= WEIGHT_DECAY) or a number >= 0"
    ),
    "SOLVER.BIAS_LR_FACTOR": ge(0, integer=False),
    "SOLVER.GAMMA": gt(0),
    "SOLVER.STEPS": ints(0, "iterations"),
    "SOLVER.WARMUP_FACTOR": between(0.0, 1.0),
    "SOLVER.WARMUP_ITERS": ge(0),
    "SOLVER.WARMUP_METHOD": one_of("linear", "constant"),
    "SOLVER.CHECKPOINT_PERIOD": ge(1),
    "SOLVER.MAX_TO_KEEP": ge(0),
    "SOLVER.IMS_PER_BATCH": ge(1),
    "SOLVER.IMS_PER_DEVICE": ge(0),
    "SOLVER.REFERENCE_WORLD_SIZE": ge(0),
    "SOLVER.REFERENCE_WORLD_SIZE_MODE": one_of("auto", "accumulate", "rescale"),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": one_of("value", "norm", "full_model"),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": gt(0),
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": Rule(
        lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
        "a number > 0 (inf for the max norm)",
    ),
    "SOLVER.AMP.DTYPE": one_of("auto", "float16", "bfloat16"),
    "TEST.EVAL_PERIOD": ge(0),
    "TEST.DETECTIONS_PER_IMAGE": ge(1),
    "TEST.EVALUATOR_BACKEND": one_of("hotcoco", "faster_coco_eval", "pycocotools"),
    "TEST.VIS_PERIOD_IMAGES": ge(0),
    "TEST.AUG.MIN_SIZES": seq(ge(1), min_len=1, max_len=32),
    "TEST.AUG.MAX_SIZE": ge(1),
    "TEST.VIS_SCORE_THRESH": between(0.0, 1.0),
    "OUTPUT_DIR": Rule(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty path"),
    "SEED": Rule(lambda v: _int(v) and -1 <= v < 2**31, "-1 (random) or an integer in [0, 2**31)"),
    "LOG_PERIOD": ge(1),
}


def _rel(ok: bool, key: str, value, why: str) -> Optional[Tuple[str, Any, str]]:
    return None if ok else (key, value, why)


_COMPILED_BY = {"stem": "backbone", "res2": "backbone", "res3": "backbone", "res4": "backbone", "res5": "backbone"}
_COMPILED_BY.update(fpn="backbone", box_head="box_head", mask_head="mask_head")


def _checkpoint_parts_problem(c) -> Optional[Tuple[str, Any, str]]:
    """MODEL.ACTIVATION_CHECKPOINT.PARTS: each part must exist, train (a frozen part keeps no activations) and not be
    compiled (torch.compile of checkpointed code is not what detgn tests)."""
    parts = list(c.MODEL.ACTIVATION_CHECKPOINT.PARTS)
    key = "MODEL.ACTIVATION_CHECKPOINT.PARTS"
    freeze = c.MODEL.BACKBONE.FREEZE_AT
    for p in parts:
        frozen = (p == "stem" and freeze >= 1) or (p.startswith("res") and freeze >= int(p[3:]))
        if frozen:
            return (
                key,
                parts,
                f"parts that train: '{p}' is frozen by MODEL.BACKBONE.FREEZE_AT {freeze} (no activations kept)",
            )
        if p == "mask_head" and not c.MODEL.MASK_ON:
            return (key, parts, "without 'mask_head' when MODEL.MASK_ON is False")
        if p == "fpn" and "fpn" not in c.MODEL.BACKBONE.NAME:
            return (key, parts, f"without 'fpn': MODEL.BACKBONE.NAME {c.MODEL.BACKBONE.NAME} has no FPN")
        if p in ("box_head", "res5") and c.MODEL.ROI_HEADS.NAME == "Res5ROIHeads":
            return (key, parts, f"without '{p}' for C4 models (Res5ROIHeads runs res5 as the box head)")
        if _COMPILED_BY[p] in c.MODEL.COMPILE.PARTS:
            return (key, parts, f"parts not compiled: '{p}' is inside MODEL.COMPILE.PARTS '{_COMPILED_BY[p]}'")
    return None


# (norm key, channels key) of every component whose norm may be GN
_GN_CHANNELS = (
    ("MODEL.FPN.NORM", "MODEL.FPN.OUT_CHANNELS"),
    ("MODEL.ROI_BOX_HEAD.NORM", "MODEL.ROI_BOX_HEAD.CONV_DIM"),
    ("MODEL.ROI_MASK_HEAD.NORM", "MODEL.ROI_MASK_HEAD.CONV_DIM"),
    ("MODEL.RESNETS.NORM", "MODEL.RESNETS.STEM_OUT_CHANNELS"),
    ("MODEL.SEM_SEG_HEAD.NORM", "MODEL.SEM_SEG_HEAD.CONVS_DIM"),
)


def _gn_groups_problem(c) -> Optional[Tuple[str, Any, str]]:
    """The first GN layer whose channels its groups do not divide: 'GN' names MODEL.GROUP_NORM.NUM_GROUPS (shared by
    every 'GN'), 'GN(G)' the component's own norm key. The semantic head counts with PanopticFPN only."""
    for norm_key, channels_key in _GN_CHANNELS:
        if norm_key == "MODEL.SEM_SEG_HEAD.NORM" and c.MODEL.META_ARCHITECTURE != "PanopticFPN":
            continue
        norm, channels = get_key(c, norm_key), get_key(c, channels_key)
        groups = _gn_groups(norm, c)
        if not groups or channels % groups == 0:
            continue
        if norm == "GN":
            return (
                "MODEL.GROUP_NORM.NUM_GROUPS",
                c.MODEL.GROUP_NORM.NUM_GROUPS,
                f"a divisor of {channels} ({channels_key}, the channels of {norm_key} 'GN'); or give that component "
                "its own groups with 'GN(G)'",
            )
        return (norm_key, norm, f"'GN(G)' with G a divisor of {channels} ({channels_key})")
    return None


def _resnet_depth_problem(c) -> Optional[Tuple[str, Any, str]]:
    """ResNet-18/34 (basic blocks): 64 res2 channels, no res5 dilation, no deformable stages (they replace the
    bottleneck's 3x3, which basic blocks do not have)."""
    r = c.MODEL.RESNETS
    if r.DEPTH >= 50:
        return None
    if r.RES2_OUT_CHANNELS != 64:
        return ("MODEL.RESNETS.RES2_OUT_CHANNELS", r.RES2_OUT_CHANNELS, f"64 for ResNet-{r.DEPTH}")
    if r.RES5_DILATION != 1:
        return ("MODEL.RESNETS.RES5_DILATION", r.RES5_DILATION, f"1 for ResNet-{r.DEPTH}")
    if any(r.DEFORM_ON_PER_STAGE):
        return (
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
            list(r.DEFORM_ON_PER_STAGE),
            f"all False for ResNet-{r.DEPTH} (deformable convolutions replace the bottleneck 3x3; use DEPTH 50, 101 "
            "or 152)",
        )
    return None


# relations between keys: (description, check(cfg) -> None or (key, value, what is allowed))
RELATIONS: List[Tuple[str, Callable]] = [
    (
        "RPN IOU_LABELS has one more entry than IOU_THRESHOLDS, thresholds increasing",
        lambda c: _rel(
            len(c.MODEL.RPN.IOU_LABELS) == len(c.MODEL.RPN.IOU_THRESHOLDS) + 1
            and list(c.MODEL.RPN.IOU_THRESHOLDS) == sorted(c.MODEL.RPN.IOU_THRESHOLDS),
            "MODEL.RPN.IOU_LABELS",
            list(c.MODEL.RPN.IOU_LABELS),
            f"one more label than MODEL.RPN.IOU_THRESHOLDS {list(c.MODEL.RPN.IOU_THRESHOLDS)} (increasing)",
        ),
    ),
    (
        "ROI_HEADS IOU_LABELS has one more entry than IOU_THRESHOLDS, thresholds increasing",
        lambda c: _rel(
            len(c.MODEL.ROI_HEADS.IOU_LABELS) == len(c.MODEL.ROI_HEADS.IOU_THRESHOLDS) + 1
            and list(c.MODEL.ROI_HEADS.IOU_THRESHOLDS) == sorted(c.MODEL.ROI_HEADS.IOU_THRESHOLDS),
            "MODEL.ROI_HEADS.IOU_LABELS",
            list(c.MODEL.ROI_HEADS.IOU_LABELS),
            f"one more label than MODEL.ROI_HEADS.IOU_THRESHOLDS {list(c.MODEL.ROI_HEADS.IOU_THRESHOLDS)} (increasing)",
        ),
    ),
    (
        "a weight-standardisation convention only with weight-standardised convs",
        lambda c: _rel(
            c.MODEL.WEIGHT_STANDARDIZATION.CONVENTION == "auto"
            or any(c.MODEL.WEIGHT_STANDARDIZATION[p] for p in ("BACKBONE", "FPN", "BOX_HEAD", "MASK_HEAD")),
            "MODEL.WEIGHT_STANDARDIZATION.CONVENTION",
            c.MODEL.WEIGHT_STANDARDIZATION.CONVENTION,
            "'auto' unless MODEL.WEIGHT_STANDARDIZATION.BACKBONE, FPN, BOX_HEAD or MASK_HEAD is True",
        ),
    ),
    (
        "deformable-conv options only with deformable stages",
        lambda c: _rel(
            any(c.MODEL.RESNETS.DEFORM_ON_PER_STAGE)
            or (not c.MODEL.RESNETS.DEFORM_MODULATED and c.MODEL.RESNETS.DEFORM_NUM_GROUPS == 1),
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
            list(c.MODEL.RESNETS.DEFORM_ON_PER_STAGE),
            "True for at least one stage when MODEL.RESNETS.DEFORM_MODULATED or DEFORM_NUM_GROUPS is set",
        ),
    ),
    (
        "deformable groups divide every deformable stage's bottleneck channels",
        lambda c: _rel(
            all(
                c.MODEL.RESNETS.NUM_GROUPS * c.MODEL.RESNETS.WIDTH_PER_GROUP * 2**i % c.MODEL.RESNETS.DEFORM_NUM_GROUPS
                == 0
                for i, on in enumerate(c.MODEL.RESNETS.DEFORM_ON_PER_STAGE)
                if on
            ),
            "MODEL.RESNETS.DEFORM_NUM_GROUPS",
            c.MODEL.RESNETS.DEFORM_NUM_GROUPS,
            "a divisor of the bottleneck channels (NUM_GROUPS x WIDTH_PER_GROUP x 2^stage) of every deformable stage",
        ),
    ),
    (
        "PIXEL_STD has as many entries as PIXEL_MEAN",
        lambda c: _rel(
            len(c.MODEL.PIXEL_STD) == len(c.MODEL.PIXEL_MEAN),
            "MODEL.PIXEL_STD",
            list(c.MODEL.PIXEL_STD),
            f"{len(c.MODEL.PIXEL_MEAN)} values, as MODEL.PIXEL_MEAN",
        ),
    ),
    (
        "one anchor size list per RPN feature (or one for all)",
        lambda c: _rel(
            len(c.MODEL.ANCHOR_GENERATOR.SIZES) in (1, len(c.MODEL.RPN.IN_FEATURES)),
            "MODEL.ANCHOR_GENERATOR.SIZES",
            c.MODEL.ANCHOR_GENERATOR.SIZES,
            f"1 or {len(c.MODEL.RPN.IN_FEATURES)} lists (one per MODEL.RPN.IN_FEATURES)",
        ),
    ),
    (
        "one aspect-ratio list per RPN feature (or one for all)",
        lambda c: _rel(
            len(c.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS) in (1, len(c.MODEL.RPN.IN_FEATURES)),
            "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
            c.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS,
            f"1 or {len(c.MODEL.RPN.IN_FEATURES)} lists (one per MODEL.RPN.IN_FEATURES)",
        ),
    ),
    (
        "range sampling of the training size takes [min, max]",
        lambda c: _rel(
            c.INPUT.MIN_SIZE_TRAIN_SAMPLING != "range"
            or (len(c.INPUT.MIN_SIZE_TRAIN) == 2 and c.INPUT.MIN_SIZE_TRAIN[0] <= c.INPUT.MIN_SIZE_TRAIN[1]),
            "INPUT.MIN_SIZE_TRAIN",
            list(c.INPUT.MIN_SIZE_TRAIN),
            "two sizes [min, max] with INPUT.MIN_SIZE_TRAIN_SAMPLING range",
        ),
    ),
    (
        "LSJ scales ordered",
        lambda c: _rel(
            c.INPUT.LSJ.MIN_SCALE <= c.INPUT.LSJ.MAX_SCALE,
            "INPUT.LSJ.MIN_SCALE",
            c.INPUT.LSJ.MIN_SCALE,
            f"at most INPUT.LSJ.MAX_SCALE {c.INPUT.LSJ.MAX_SCALE}",
        ),
    ),
    (
        "relative crop sizes are fractions",
        lambda c: _rel(
            c.INPUT.CROP.TYPE == "absolute" or all(0 < x <= 1 for x in c.INPUT.CROP.SIZE),
            "INPUT.CROP.SIZE",
            list(c.INPUT.CROP.SIZE),
            f"fractions in (0, 1] with INPUT.CROP.TYPE {c.INPUT.CROP.TYPE}",
        ),
    ),
    (
        "repeat-factor sampling needs a threshold",
        lambda c: _rel(
            c.DATALOADER.SAMPLER_TRAIN != "RepeatFactorTrainingSampler" or c.DATALOADER.REPEAT_THRESHOLD > 0,
            "DATALOADER.REPEAT_THRESHOLD",
            c.DATALOADER.REPEAT_THRESHOLD,
            "> 0 with RepeatFactorTrainingSampler (LVIS uses 0.001)",
        ),
    ),
    (
        "LR steps increasing",
        lambda c: _rel(
            list(c.SOLVER.STEPS) == sorted(c.SOLVER.STEPS),
            "SOLVER.STEPS",
            tuple(c.SOLVER.STEPS),
            "increasing iterations",
        ),
    ),
    (
        "cosine schedule end LR not above the base LR",
        lambda c: _rel(
            c.SOLVER.LR_SCHEDULER_NAME != "WarmupCosineLR" or c.SOLVER.BASE_LR_END <= c.SOLVER.BASE_LR,
            "SOLVER.BASE_LR_END",
            c.SOLVER.BASE_LR_END,
            f"at most SOLVER.BASE_LR {c.SOLVER.BASE_LR}",
        ),
    ),
    (
        "Triton GroupNorm needs CUDA",
        lambda c: _rel(
            c.MODEL.GROUP_NORM.IMPL != "triton" or _triton_ok(c.MODEL.DEVICE),
            "MODEL.GROUP_NORM.IMPL",
            c.MODEL.GROUP_NORM.IMPL,
            "'torch' unless MODEL.DEVICE is cuda and the triton package is installed",
        ),
    ),
    (
        "torch.compile modes other than default are inductor's",
        lambda c: _rel(
            c.MODEL.COMPILE.BACKEND == "inductor" or c.MODEL.COMPILE.MODE == "default",
            "MODEL.COMPILE.MODE",
            c.MODEL.COMPILE.MODE,
            f"'default' with MODEL.COMPILE.BACKEND {c.MODEL.COMPILE.BACKEND}",
        ),
    ),
    (
        "activation checkpointing of parts the model trains and has, none of them compiled",
        lambda c: _checkpoint_parts_problem(c),
    ),
    (
        "each test dataset listed once (its results go to OUTPUT_DIR/inference/<name>)",
        lambda c: _rel(
            len(set(c.DATASETS.TEST)) == len(c.DATASETS.TEST),
            "DATASETS.TEST",
            c.DATASETS.TEST,
            "each dataset once: "
            + ", ".join(sorted({n for n in c.DATASETS.TEST if list(c.DATASETS.TEST).count(n) > 1}))
            + " is listed twice (it would be evaluated twice into one folder)",
        ),
    ),
    (
        "test-time augmentation of the R-CNN detectors",
        lambda c: _rel(
            not c.TEST.AUG.ENABLED or c.MODEL.META_ARCHITECTURE == "GeneralizedRCNN",
            "TEST.AUG.ENABLED",
            c.TEST.AUG.ENABLED,
            f"False with MODEL.META_ARCHITECTURE {c.MODEL.META_ARCHITECTURE} (test-time augmentation wraps "
            "GeneralizedRCNN)",
        ),
    ),
    (
        "float16 autocast needs CUDA",
        lambda c: _rel(
            not (c.SOLVER.AMP.ENABLED and c.SOLVER.AMP.DTYPE == "float16" and c.MODEL.DEVICE == "cpu"),
            "SOLVER.AMP.DTYPE",
            c.SOLVER.AMP.DTYPE,
            "'auto' or 'bfloat16' with MODEL.DEVICE cpu (float16 autocast is CUDA only)",
        ),
    ),
    ("GN groups divide every GN layer's channels", _gn_groups_problem),
    ("ResNet-18/34 (basic blocks): 64 res2 channels, no dilation, no deformable stages", _resnet_depth_problem),
]


# what a config function registered (config/components.py): key or relation description -> its owner
OWNERS: Dict[str, str] = {}


def register_rules(rules: Dict[str, Rule], relations: List[Tuple[str, Callable]] = (), *, owner: str) -> None:
    """Add a component's rules and relations to the tables (config_function calls it). A key or relation that is
    checked already is refused: each has one owner."""
    taken = sorted(k for k in rules if k in RULES) + sorted(d for d, _ in relations if d in dict(RELATIONS))
    if taken:
        raise ValueError(f"{owner} registers rules that are checked already: {taken}")
    for key, rule in rules.items():
        if not isinstance(rule, Rule):
            raise TypeError(f"{owner}: the rule of {key} must be a detgn.config.rules.Rule, got {type(rule).__name__}")
    RULES.update(rules)
    RELATIONS.extend(relations)
    OWNERS.update({k: owner for k in rules})
    OWNERS.update({d: owner for d, _ in relations})


def _owner_keys_present(cfg, owner: str) -> bool:
    return all(has_key(cfg, k) for k, o in OWNERS.items() if o == owner and k in RULES)


def check_config(cfg, world_size: Optional[int] = None) -> None:
    """Raise ConfigValueError naming the first key whose value breaks RULES or RELATIONS. A rule on a key the
    config does not have (a tool's keys: CLASSIFIER.*) is skipped, and so is a component's relation when the
    config lacks that component's keys. With `world_size` (the number of training processes), also check that
    SOLVER.IMS_PER_BATCH divides into its processes and their micro-batches of SOLVER.IMS_PER_DEVICE
    (config/batch.py)."""
    for key, rule in RULES.items():
        if not has_key(cfg, key):
            continue
        value = get_key(cfg, key)
        if not rule.ok(value):
            raise ConfigValueError(f"{key} = {short_repr(value)}: must be {rule.allowed}")
    for description, relation in RELATIONS:
        if description in OWNERS and not _owner_keys_present(cfg, OWNERS[description]):
            continue
        bad = relation(cfg)
        if bad:
            key, value, allowed = bad
            raise ConfigValueError(f"{key} = {short_repr(value)}: must be {allowed}")
    if world_size:
        micro_batches(cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.IMS_PER_DEVICE, world_size)


def rules_table() -> str:
    """RULES and RELATIONS as Markdown (docs/config_rules.md): detgn's own table, then each config function's."""
    from .components import load_builtin_components

    load_builtin_components()
    own = [k for k in RULES if k not in OWNERS]
    lines = ["| key | allowed |", "|---|---|"] + [f"| `{k}` | {RULES[k].allowed} |" for k in own]
    lines += ["", "Relations between keys:", ""] + [f"- {d}" for d, _ in RELATIONS if d not in OWNERS]
    lines += [
        "- SOLVER.IMS_PER_BATCH divisible by the number of training processes (--num-gpus x --num-machines) and, "
        "with SOLVER.IMS_PER_DEVICE > 0, by processes x IMS_PER_DEVICE"
    ]
    for owner in sorted(set(OWNERS.values())):  # by name: the same order whatever imported them first
        keys = [k for k in RULES if OWNERS.get(k) == owner]
        relations = [d for d, _ in RELATIONS if OWNERS.get(d) == owner]
        lines += ["", f"Registered by `{owner}`:", ""]
        if keys:
            lines += ["| key | allowed |", "|---|---|"] + [f"| `{k}` | {RULES[k].allowed} |" for k in keys]
        if relations:
            lines += ([""] if keys else []) + [f"- {d}" for d in relations]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # run as a script, this file is a second module: print the package's tables
    from detgn.config.rules import rules_table as package_rules_table

    print(package_rules_table(), end="")
