"""LVIS v1 (1,203 categories, federated annotation) as detgn dataset dicts.

An LVIS file has COCO's layout; its images name their file by `coco_url` (".../train2017/000000391895.jpg",
resolved as <image_root>/train2017/000000391895.jpg, so image_root is the folder holding COCO's
train2017/ and val2017/), categories carry a `frequency` (r, c or f) and images the federated lists
`neg_category_ids` / `not_exhaustive_category_ids`, which the LVIS evaluation reads from the json.
The records go through the same checks and the same record cache as COCO's.
"""

import os
from typing import Dict, List, Optional

from ..catalog import DatasetCatalog, MetadataCatalog
from ..errors import DatasetFormatError, DatasetNotFoundError
from .coco import _gc_paused, _read_json, coco_records_from_data

__all__ = ["load_lvis_json", "register_lvis_instances"]


def _file_names(json_file: str, data: dict) -> None:
    for i, img in enumerate(data.get("images", []) if isinstance(data.get("images"), list) else []):
        if isinstance(img, dict) and "file_name" not in img:
            url = img.get("coco_url")
            if not isinstance(url, str) or url.count("/") < 1:
                raise DatasetFormatError(
                    f"{json_file}: images[{i}] has neither 'file_name' nor a 'coco_url' to take it from"
                )
            img["file_name"] = "/".join(url.split("/")[-2:])


def _check_lvis_fields(json_file: str, data: dict) -> None:
    """LVIS's own fields, where present: the federated lists of each image are lists of integer category ids, a
    category's frequency is r, c or f. DatasetFormatError naming the entry and the field."""
    from detgn.utils.errors import short_repr

    for i, img in enumerate(data["images"]):
        for field in ("neg_category_ids", "not_exhaustive_category_ids"):
            v = img.get(field, [])
            if not (type(v) is list and all(type(c) is int for c in v)):
                raise DatasetFormatError(
                    f"{json_file}: images[{i}] (id {img.get('id')}): '{field}' = {short_repr(v, 60)}; expected a list "
                    "of integer category ids"
                )
    for i, cat in enumerate(data["categories"]):
        if cat.get("frequency", "f") not in ("r", "c", "f"):
            raise DatasetFormatError(
                f"{json_file}: categories[{i}] (id {cat.get('id')}): 'frequency' = {short_repr(cat['frequency'], 40)}; "
                "expected 'r', 'c' or 'f' (rare, common, frequent)"
            )


def load_lvis_json(
    json_file: str, image_root: str, dataset_name: Optional[str] = None, check_images: bool = True
) -> List[Dict]:
    """Records of an LVIS json (see the module docstring); with `dataset_name`, its metadata gets
    thing_classes (sorted by category id), the id map and `category_frequency` (r/c/f per class)."""
    with _gc_paused():
        data = _read_json(json_file)
        _file_names(json_file, data)
        records = coco_records_from_data(json_file, data, image_root, dataset_name, check_images)
        _check_lvis_fields(json_file, data)
        if dataset_name is not None:
            cats = sorted((c for c in data["categories"]), key=lambda c: c["id"])
            MetadataCatalog.get(dataset_name).category_frequency = [c.get("frequency", "f") for c in cats]
    return records


def register_lvis_instances(name: str, metadata: Dict, json_file: str, image_root: str) -> None:
    """Register an LVIS-format dataset under `name` (loaded lazily, through the record cache) with
    evaluator_type "lvis"."""
    from ..record_cache import cached_records

    def load():
        if not os.path.isfile(json_file):
            raise DatasetNotFoundError(f"LVIS annotation file not found: {json_file} (see datasets/README.md)")

        def build():
            records = load_lvis_json(json_file, image_root, name)
            meta = MetadataCatalog.get(name)
            return records, {
                "thing_classes": list(meta.thing_classes),
                "category_frequency": list(meta.category_frequency),
                "id_map": [[int(k), int(v)] for k, v in meta.thing_dataset_id_to_contiguous_id.items()],
            }

        records, meta_saved = cached_records(
            name, build, [json_file], options=("lvis", image_root, os.path.realpath(image_root))
        )
        if isinstance(meta_saved, dict) and "id_map" in meta_saved:
            meta = MetadataCatalog.get(name)
            meta.thing_classes = list(meta_saved["thing_classes"])
            meta.category_frequency = list(meta_saved["category_frequency"])
            meta.thing_dataset_id_to_contiguous_id = {int(k): int(v) for k, v in meta_saved["id_map"]}
        return records

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="lvis", **metadata)
