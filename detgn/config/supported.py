"""Keys detgn keeps for detectron2 compatibility but does not implement: each must keep its default.

A config that changes one of them is refused with a one-line error naming the key, instead of
being accepted and ignored. `check_supported(cfg)` runs when a config is set up for training,
evaluation or a tool (jobs.setup_cfg) and when a model or trainer is built from it.
"""

from detgn.utils.errors import UserInputError, short_repr

from .config import get_key, has_key
from .defaults import _C

__all__ = ["UNSUPPORTED_KEYS", "UnsupportedConfigError", "check_supported", "register_unsupported"]


class UnsupportedConfigError(UserInputError, ValueError):
    """A config sets a key that detgn accepts for compatibility but does not implement."""


# key -> what it would do in detectron2 (the reason detgn cannot honour it)
UNSUPPORTED_KEYS = {
    "VERSION": "configs of another format version (detgn reads version 2, detectron2's current format)",
    "MODEL.LOAD_PROPOSALS": "precomputed proposals",
    "MODEL.KEYPOINT_ON": "the keypoint head",
    "MODEL.ANCHOR_GENERATOR.ANGLES": "rotated anchors",
    "MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES": "training the mask head on predicted boxes",
    "MODEL.ROI_BOX_HEAD.USE_FED_LOSS": "the federated classification loss",
    "MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE": "the sigmoid classification loss",
    "DATASETS.PROPOSAL_FILES_TRAIN": "precomputed proposals",
    "DATASETS.PROPOSAL_FILES_TEST": "precomputed proposals",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN": "precomputed proposals",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST": "precomputed proposals",
    "SOLVER.NUM_DECAYS": "detectron2's cosine/step schedule options",
    "SOLVER.RESCALE_INTERVAL": "detectron2's schedule rescaling",
    "TEST.EXPECTED_RESULTS": "detectron2's expected-results check",
    "TEST.PRECISE_BN.ENABLED": "precise BN statistics",
    "TEST.PRECISE_BN.NUM_ITER": "precise BN statistics",
    "VIS_PERIOD": "detectron2's training visualisation (detgn: TEST.VIS_PERIOD_IMAGES)",
    "GLOBAL.HACK": "nothing (a detectron2 placeholder)",
}


def register_unsupported(keys, *, owner: str) -> None:
    """Add a component's unsupported keys (key -> what detgn does not implement); config_function calls it."""
    taken = sorted(k for k in keys if k in UNSUPPORTED_KEYS)
    if taken:
        raise ValueError(f"{owner} registers unsupported keys that are registered already: {taken}")
    UNSUPPORTED_KEYS.update(keys)


def _default(key):
    """The default of an unsupported key: detgn's defaults.py, or the config function that adds the key."""
    if has_key(_C, key):
        return get_key(_C, key)
    from .components import apply_config_functions

    return get_key(apply_config_functions(_C.clone(), by_default=None), key)


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def check_supported(cfg) -> None:
    """Raise UnsupportedConfigError for the first key of UNSUPPORTED_KEYS that differs from its default."""
    for key, what in UNSUPPORTED_KEYS.items():
        if not has_key(cfg, key):  # a key a tool adds (the config of another tool has none)
            continue
        value, default = get_key(cfg, key), _default(key)
        if not _same(value, default):
            raise UnsupportedConfigError(
                f"{key} = {short_repr(value)}: detgn does not implement {what}; remove the key or set it back to "
                f"its default {short_repr(default)}"
            )
