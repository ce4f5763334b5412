from .norm import FrozenBatchNorm2d, LayerNorm2d, NaiveSyncBatchNorm, get_norm, is_norm_module, norm_from_cfg
from .shape_spec import ShapeSpec
from .wrappers import WS_CONVENTIONS, Conv2d, c2_msra_fill, c2_xavier_fill, cat, ws_setting
from .deform_conv import DeformConv2d
from .activation_checkpoint import CHECKPOINT_PARTS, run_checkpointed

__all__ = [k for k in globals() if not k.startswith("_")]
