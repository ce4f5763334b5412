from . import datasets  # noqa: F401  registers built-in datasets
from .build import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .copy_paste import CopyPasteMapper
from .dataset_mapper import DatasetMapper
from .datasets import load_coco_json, load_lvis_json, register_coco_instances, register_lvis_instances

__all__ = [k for k in globals() if not k.startswith("_")]
