"""`@configurable`: lets a module be built from explicit kwargs or from a config.

class Head(nn.Module):
    @configurable
    def __init__(self, *, channels): ...
    @classmethod
    def from_config(cls, cfg, input_shape): return {"channels": ...}

Head(channels=256)            # explicit
Head(cfg, input_shape)        # translated once, in from_config
Head(cfg, input_shape, channels=128)  # from_config, then explicit keywords override (as in detectron2)
"""

import functools
import inspect

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
            init_func(self, **_args_from_config(from_config, *args, **kwargs))
        else:
            init_func(self, *args, **kwargs)

    return wrapped


def _args_from_config(from_config, *args, **kwargs):
    """Call from_config with the arguments it declares; keyword arguments it does not declare are
    passed to __init__ as given, overriding what from_config returned."""
    params = inspect.signature(from_config).parameters
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return from_config(*args, **kwargs)
    own = {k: v for k, v in kwargs.items() if k in params}
    extra = {k: v for k, v in kwargs.items() if k not in params}
    ret = from_config(*args, **own)
    ret.update(extra)
    return ret
