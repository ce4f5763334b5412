from . import builtin  # noqa: F401  registers the built-in datasets
from .coco import DatasetFormatError, load_coco_json, register_coco_instances

__all__ = ["DatasetFormatError", "load_coco_json", "register_coco_instances"]
