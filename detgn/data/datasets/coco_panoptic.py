"""COCO panoptic data for Panoptic FPN, registered as detectron2's `coco_2017_*_panoptic_separated`: the instance
json gives the things (boxes, masks), a semantic PNG per image gives the stuff (labels 1..S for the S stuff
categories in id order, 0 for every thing pixel, 255 unlabelled; made by `python -m detgn.data.prepare_panoptic`),
and the panoptic json + PNGs are the ground truth of PQ.

Records are the instance records plus "sem_seg_file_name", "pan_seg_file_name" and "segments_info" ([{"id",
"category_id" (the dataset's), "iscrowd", "area"}]); they go through the same record cache as instance data,
keyed on both jsons. Metadata: thing_classes / thing_dataset_id_to_contiguous_id (from the instance json),
stuff_classes (["things"] + the stuff names) / stuff_dataset_id_to_contiguous_id ({0: 0, stuff id: 1..S}),
panoptic_json, panoptic_root, sem_seg_root, ignore_label 255, evaluator_type "coco_panoptic_seg".
"""

import json
import os
from typing import Dict, List, Tuple

from ..catalog import DatasetCatalog, MetadataCatalog
from ..errors import DatasetFormatError, DatasetNotFoundError
from .coco import load_coco_json

__all__ = [
    "register_coco_panoptic_separated",
    "load_coco_panoptic_separated",
    "read_panoptic_json",
    "semantic_label_map",
    "IGNORE_LABEL",
]

IGNORE_LABEL = 255
_PREPARE = "python -m detgn.data.prepare_panoptic"


def read_panoptic_json(path: str) -> Dict:
    """The panoptic json, checked for what detgn relies on; DatasetFormatError in one line otherwise."""
    if not os.path.isfile(path):
        raise DatasetNotFoundError(f"Panoptic json not found: {path} (check the path or DETGN_DATASETS)")
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except ValueError as e:
        raise DatasetFormatError(f"Malformed json in {path}: {e}") from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetFormatError(
            f"{path} is not a COCO panoptic file: it needs lists 'images', 'annotations', 'categories'"
        )
    cats = {}
    for c in data["categories"]:
        if not isinstance(c, dict) or type(c.get("id")) is not int or c.get("isthing") not in (0, 1):
            raise DatasetFormatError(f"{path}: category {str(c)[:80]} needs an integer 'id' and 'isthing' 0 or 1")
        cats[c["id"]] = c
    if sum(1 for c in cats.values() if not c["isthing"]) > 254:
        raise DatasetFormatError(f"{path}: more than 254 stuff categories do not fit an 8-bit semantic label map")
    image_ids = {im.get("id") for im in data["images"] if isinstance(im, dict)}
    for a in data["annotations"]:
        if not isinstance(a, dict) or not isinstance(a.get("segments_info"), list) or "file_name" not in a:
            raise DatasetFormatError(f"{path}: annotation {str(a)[:80]} needs 'image_id', 'file_name', 'segments_info'")
        if a.get("image_id") not in image_ids:
            raise DatasetFormatError(
                f"{path}: annotation {a['file_name']} refers to image id {a.get('image_id')!r}, not in 'images'"
            )
        seen = set()
        for s in a["segments_info"]:
            sid = s.get("id") if isinstance(s, dict) else None
            if type(sid) is not int or not 0 < sid < 2**24:
                raise DatasetFormatError(
                    f"{path}: {a['file_name']}: segment {str(s)[:60]} needs an integer 'id' in 1..2^24-1"
                )
            if sid in seen:
                raise DatasetFormatError(f"{path}: {a['file_name']}: segment id {sid} appears twice")
            seen.add(sid)
            if s.get("category_id") not in cats:
                raise DatasetFormatError(
                    f"{path}: {a['file_name']}: segment {sid} has category_id {s.get('category_id')!r}, not in 'categories'"
                )
    return data


def semantic_label_map(categories: List[Dict]) -> Tuple[Dict[int, int], List[str]]:
    """({dataset category id: semantic label}, stuff_classes): things -> 0, stuff in id order -> 1..S;
    stuff_classes = ["things"] + the stuff names."""
    stuff = sorted((c for c in categories if not c["isthing"]), key=lambda c: c["id"])
    label = {c["id"]: 0 for c in categories if c["isthing"]}
    label.update({c["id"]: i + 1 for i, c in enumerate(stuff)})
    return label, ["things"] + [str(c.get("name", c["id"])) for c in stuff]


def load_coco_panoptic_separated(
    instances_json: str, image_root: str, panoptic_json: str, panoptic_root: str, sem_seg_root: str, dataset_name: str
) -> Tuple[List[Dict], Dict]:
    """(records, metadata) as the module docstring says; one-line errors when the two jsons do not describe the
    same images and things, or when the semantic PNGs are missing (the message gives the command that makes them)."""
    pan = read_panoptic_json(panoptic_json)
    records = load_coco_json(instances_json, image_root, dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    pan_things = sorted(c["id"] for c in pan["categories"] if c["isthing"])
    if pan_things != sorted(meta.thing_dataset_id_to_contiguous_id):
        raise DatasetFormatError(
            f"{panoptic_json}: thing categories {pan_things[:10]} differ from those of {instances_json} "
            f"{sorted(meta.thing_dataset_id_to_contiguous_id)[:10]}; the two files must come from the same release"
        )
    if not os.path.isdir(sem_seg_root):
        raise DatasetNotFoundError(
            f"Semantic label folder not found: {sem_seg_root}; make it with {_PREPARE} --panoptic-json "
            f"{panoptic_json} --panoptic-root {panoptic_root} --output {sem_seg_root}"
        )
    by_image = {a["image_id"]: a for a in pan["annotations"]}
    present = set(os.listdir(sem_seg_root))
    missing_pan, missing_sem = [], []
    for r in records:
        a = by_image.get(r["image_id"])
        if a is None:
            missing_pan.append(r["image_id"])
            continue
        png = os.path.splitext(a["file_name"])[0] + ".png"
        if png not in present:
            missing_sem.append(png)
        r["sem_seg_file_name"] = os.path.join(sem_seg_root, png)
        r["pan_seg_file_name"] = os.path.join(panoptic_root, a["file_name"])
        r["segments_info"] = [
            {k: s[k] for k in ("id", "category_id", "iscrowd", "area") if k in s} for s in a["segments_info"]
        ]
    if missing_pan:
        raise DatasetFormatError(
            f"{panoptic_json}: no panoptic annotation for {len(missing_pan)} image(s) of {instances_json} "
            f"(image ids {missing_pan[:5]}); the two files must describe the same images"
        )
    if missing_sem:
        raise DatasetNotFoundError(
            f"{len(missing_sem)} semantic label PNG(s) missing in {sem_seg_root} (first: {missing_sem[0]}); finish them "
            f"with {_PREPARE} --panoptic-json {panoptic_json} --panoptic-root {panoptic_root} --output {sem_seg_root}"
        )
    labels, stuff_classes = semantic_label_map(pan["categories"])
    stuff_map = {0: 0}
    stuff_map.update({cid: lab for cid, lab in labels.items() if lab > 0})
    return records, {
        "thing_classes": list(meta.thing_classes),
        "id_map": [[int(k), int(v)] for k, v in meta.thing_dataset_id_to_contiguous_id.items()],
        "stuff_classes": stuff_classes,
        "stuff_id_map": [[int(k), int(v)] for k, v in stuff_map.items()],
    }


def _set_metadata(name: str, metadata: Dict) -> None:
    meta = MetadataCatalog.get(name)
    meta.thing_classes = list(metadata["thing_classes"])
    meta.thing_dataset_id_to_contiguous_id = {int(k): int(v) for k, v in metadata["id_map"]}
    meta.stuff_classes = list(metadata["stuff_classes"])
    meta.stuff_dataset_id_to_contiguous_id = {int(k): int(v) for k, v in metadata["stuff_id_map"]}


def register_coco_panoptic_separated(
    name: str,
    metadata: Dict,
    image_root: str,
    panoptic_root: str,
    panoptic_json: str,
    sem_seg_root: str,
    instances_json: str,
) -> None:
    """Register `name` (loaded lazily, through the record cache) with evaluator_type "coco_panoptic_seg":
    COCO AP of the things, mIoU of the semantic labels and PQ are evaluated for it."""
    from ..record_cache import cached_records

    def load():
        for path in (instances_json, panoptic_json):
            if not os.path.isfile(path):
                raise DatasetNotFoundError(f"Annotation file not found: {path} (check the path or DETGN_DATASETS)")

        def build():
            return load_coco_panoptic_separated(
                instances_json, image_root, panoptic_json, panoptic_root, sem_seg_root, name
            )

        records, meta = cached_records(
            name,
            build,
            [instances_json, panoptic_json],
            options=("panoptic", image_root, os.path.realpath(image_root), panoptic_root, sem_seg_root),
        )
        _set_metadata(name, meta)
        return records

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=instances_json,
        image_root=image_root,
        panoptic_json=panoptic_json,
        panoptic_root=panoptic_root,
        sem_seg_root=sem_seg_root,
        ignore_label=IGNORE_LABEL,
        evaluator_type="coco_panoptic_seg",
        **metadata,
    )
