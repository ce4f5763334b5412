from . import builtin  # noqa: F401  registers the built-in datasets
from .coco import DatasetFormatError, load_coco_json, register_coco_instances
from .lvis import load_lvis_json, register_lvis_instances

__all__ = [
    "DatasetFormatError",
    "load_coco_json",
    "register_coco_instances",
    "load_lvis_json",
    "register_lvis_instances",
]
