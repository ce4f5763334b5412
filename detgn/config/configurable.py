"""`@configurable`: lets a module be built from explicit kwargs or from a config.

    class Head(nn.Module):
        @configurable
        def __init__(self, *, channels): ...
        @classmethod
        def from_config(cls, cfg, input_shape): return {"channels": ...}

    Head(channels=256)            # explicit
    Head(cfg, input_shape)        # translated once, in from_config
"""
import functools

from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["configurable"]


def configurable(init_func):
    """Decorate an `__init__`: a CfgNode as first argument routes through `cls.from_config`."""
    if init_func.__name__ != "__init__":
        raise TypeError("@configurable decorates __init__ only")

    @functools.wraps(init_func)
    def wrapped(self, *args, **kwargs):
        if (args and isinstance(args[0], _FvCfgNode)) or isinstance(kwargs.get("cfg"), _FvCfgNode):
            from_config = getattr(type(self), "from_config", None)
            if from_config is None:
                raise AttributeError(f"{type(self).__name__} is @configurable but has no from_config classmethod")
            explicit = from_config(*args, **kwargs)
            init_func(self, **explicit)
        else:
            init_func(self, *args, **kwargs)

    return wrapped
