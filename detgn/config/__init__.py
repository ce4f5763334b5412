from .config import CfgNode, CircularBaseError, ConfigKeyError, UnsafeConfigError, get_cfg
from .configurable import configurable

__all__ = ["CfgNode", "CircularBaseError", "ConfigKeyError", "UnsafeConfigError", "configurable", "get_cfg"]
