from .classifier import add_classifier_config, get_classifier_cfg
from .config import CfgNode, CircularBaseError, ConfigError, ConfigKeyError, UnsafeConfigError
from .defaults import get_cfg
from .configurable import configurable
from .supported import UNSUPPORTED_KEYS, UnsupportedConfigError, check_supported

__all__ = [
    "add_classifier_config",
    "get_classifier_cfg",
    "CfgNode",
    "CircularBaseError",
    "ConfigError",
    "ConfigKeyError",
    "UnsafeConfigError",
    "configurable",
    "get_cfg",
    "UNSUPPORTED_KEYS",
    "UnsupportedConfigError",
    "check_supported",
]
