from .config import CfgNode, ConfigKeyError, get_cfg
from .configurable import configurable

__all__ = ["CfgNode", "ConfigKeyError", "configurable", "get_cfg"]
