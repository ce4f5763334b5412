from .build import (
    LRMultiplier,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    get_default_optimizer_params,
    rescale_for_world_size,
)

__all__ = [k for k in globals() if not k.startswith("_")]
