from .build import LRMultiplier, build_lr_scheduler, rescale_for_world_size
from .optimizer import (
    add_optimizer_config,
    build_optimizer,
    clip_gradients,
    describe_param_groups,
    get_default_optimizer_params,
    optimizer_kind,
)

__all__ = [k for k in globals() if not k.startswith("_")]
