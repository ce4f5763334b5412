from .config import CfgNode, ConfigKeyError, get_cfg

__all__ = ["CfgNode", "ConfigKeyError", "get_cfg"]
