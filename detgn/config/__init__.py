from .config import CfgNode, CircularBaseError, ConfigKeyError, UnsafeConfigError, get_cfg
from .configurable import configurable
from .supported import UNSUPPORTED_KEYS, UnsupportedConfigError, check_supported

__all__ = [
    "CfgNode",
    "CircularBaseError",
    "ConfigKeyError",
    "UnsafeConfigError",
    "configurable",
    "get_cfg",
    "UNSUPPORTED_KEYS",
    "UnsupportedConfigError",
    "check_supported",
]
