"""Load COCO instance json into detgn dataset dicts, validating as it goes.

Problems with single annotations (degenerate or non-finite box, polygon with < 3 points or with
non-numeric / NaN / Inf coordinates, RLE whose size differs from the image or whose counts do
not decode, unknown category, image id not in 'images') are skipped and counted in one warning
per kind that names file, image id and annotation id. Problems that make the dataset unusable
(missing or malformed json, duplicate annotation ids, missing image folder, no image file
found) raise an error naming the file and the fix.
"""

import json
import logging
import math
import os
from collections import Counter, defaultdict
from operator import itemgetter
from typing import Dict, List, Optional

from detgn.structures import BoxMode
from detgn.structures.rle import rle_problem
from detgn.utils.errors import short_repr

from ..record_store import gc_paused as _gc_paused

from ..catalog import DatasetCatalog, MetadataCatalog
from ..errors import DatasetFormatError, DatasetNotFoundError  # noqa: F401 - also importable from here

__all__ = [
    "load_coco_json",
    "load_coco_json_cached",
    "register_coco_instances",
    "DatasetFormatError",
    "DatasetNotFoundError",
]

logger = logging.getLogger(__name__)


try:
    from orjson import loads as _fast_json_loads  # 3-4x faster on COCO-size files
except ImportError:  # pragma: no cover
    _fast_json_loads = json.loads


def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise DatasetNotFoundError(
            f"Annotation file not found: {json_file} (check the path or DETGN_DATASETS; see datasets/README.md)"
        )
    with open(json_file, "rb") as f:
        raw = f.read()
    try:
        data = _fast_json_loads(raw)
    except ValueError:  # orjson refuses what json accepts (NaN literals): the standard parser decides
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DatasetFormatError(
                f"Malformed json in {json_file}: {e.msg} at line {e.lineno} column {e.colno}"
            ) from e
        except UnicodeDecodeError as e:
            raise DatasetFormatError(
                f"Malformed json in {json_file}: not UTF-8 text ({e.reason} at byte {e.start})"
            ) from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data or "categories" not in data:
        raise DatasetFormatError(
            f"{json_file} is not a COCO instances file: it needs 'images', 'annotations' and 'categories'"
        )
    return data


def load_coco_json(
    json_file: str, image_root: str, dataset_name: Optional[str] = None, check_images: bool = True
) -> List[Dict]:
    """Read a COCO instances json (orjson, the standard parser as fallback), check it, return detgn dataset dicts.

    See _load_coco_json; this runs it with the cyclic garbage collector paused."""
    with _gc_paused():
        return _load_coco_json(json_file, image_root, dataset_name, check_images)


def _load_coco_json(json_file: str, image_root: str, dataset_name: Optional[str], check_images: bool) -> List[Dict]:
    """Read a COCO instances json (orjson, the standard parser as fallback), check it, return detgn dataset dicts.

    Category ids are mapped to contiguous ids 0..K-1 (sorted by id); when `dataset_name` is
    given its metadata gets thing_classes and thing_dataset_id_to_contiguous_id. Crowd
    annotations are kept with iscrowd=1 (ignored in training). Images missing on disk are
    skipped with a counted warning; if none exist the error names the folder.
    """
    return coco_records_from_data(json_file, _read_json(json_file), image_root, dataset_name, check_images)


def coco_records_from_data(
    json_file: str, data: dict, image_root: str, dataset_name: Optional[str], check_images: bool
) -> List[Dict]:
    """The checks and records of load_coco_json on an already parsed file (`json_file` names it in messages);
    LVIS files, which share COCO's layout, come through here too."""
    check_coco_structure(json_file, data)
    _check_unique_annotation_ids(json_file, data)
    if not os.path.isdir(image_root):
        raise DatasetNotFoundError(
            f"Image folder not found: {image_root} (for {json_file}; check the path or DETGN_DATASETS)"
        )
    imgs = {img["id"]: img for img in data["images"]}  # the index pycocotools would build, without its copies
    img_to_anns = defaultdict(list)
    for ann in data["annotations"]:
        img_to_anns[ann["image_id"]].append(ann)
    cats_by_id = {c["id"]: c for c in data["categories"]}
    cat_ids = sorted(cats_by_id)
    thing_classes = [cats_by_id[c]["name"] for c in cat_ids]
    id_map = {v: i for i, v in enumerate(cat_ids)}
    if dataset_name is not None:
        meta = MetadataCatalog.get(dataset_name)
        meta.thing_classes = thing_classes
        meta.thing_dataset_id_to_contiguous_id = id_map

    problems = defaultdict(list)
    img_ids = sorted(imgs.keys())
    for ann in data["annotations"]:
        if ann.get("image_id") not in imgs:
            problems["image id not in 'images'"].append(
                f"{json_file}: annotation id {ann.get('id')} (image_id {ann.get('image_id')})"
            )
    dataset_dicts = []
    xywh = BoxMode.XYWH_ABS
    present = _present_files(image_root, [imgs[i].get("file_name") for i in img_ids]) if check_images else set()
    for img_id in img_ids:
        img = imgs[img_id]
        for key in ("file_name", "height", "width"):
            if key not in img:
                raise DatasetFormatError(f"{json_file}: image id {img_id} has no '{key}'")
        file_name = os.path.join(image_root, img["file_name"])
        if check_images and img["file_name"] not in present:
            problems["missing image file"].append(f"{file_name} (image id {img_id})")
            continue
        record = {"file_name": file_name, "height": img["height"], "width": img["width"], "image_id": img_id}
        objs = []
        for ann in img_to_anns.get(img_id, ()):
            ignore, crowd = ann.get("ignore", 0), ann.get("iscrowd", 0)
            if type(ignore) not in _FLAG_TYPES or ignore not in (0, 1):
                problems["'ignore' that is not 0 or 1"].append(
                    f"{_where(json_file, img_id, ann)} (ignore {short_repr(ignore, 40)})"
                )
                continue
            if ignore:
                continue
            if type(crowd) not in _FLAG_TYPES or crowd not in (0, 1):
                problems["'iscrowd' that is not 0 or 1"].append(
                    f"{_where(json_file, img_id, ann)} (iscrowd {short_repr(crowd, 40)})"
                )
                continue
            if ann.get("category_id") not in id_map:
                problems["category id not in 'categories'"].append(
                    f"{_where(json_file, img_id, ann)} (category_id {ann.get('category_id')})"
                )
                continue
            bbox = _float_list(ann.get("bbox"))
            if bbox is None or len(bbox) != 4:
                problems["bbox that is not 4 finite numbers"].append(
                    f"{_where(json_file, img_id, ann)} (bbox {short_repr(ann.get('bbox'), 60)})"
                )
                continue
            if bbox[2] <= 0 or bbox[3] <= 0 or bbox[0] < -1 or bbox[1] < -1:
                problems["bbox with negative or zero size"].append(f"{_where(json_file, img_id, ann)} (bbox {bbox})")
                continue
            obj = {
                "bbox": bbox,
                "bbox_mode": xywh,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": int(crowd),
            }
            seg = ann.get("segmentation")
            if seg is not None:
                if isinstance(seg, dict):
                    seg, why = _checked_rle(seg, img["height"], img["width"])
                    if why:
                        problems[why].append(_where(json_file, img_id, ann))
                        continue
                elif isinstance(seg, list):
                    good, why = _clean_polygons(seg)
                    if why:
                        problems[why].append(_where(json_file, img_id, ann))
                        continue
                    if len(good) < len(seg):
                        problems["polygon with fewer than 3 points"].append(_where(json_file, img_id, ann))
                    if not good:
                        continue
                    seg = good
                else:
                    problems["unknown segmentation type"].append(_where(json_file, img_id, ann))
                    continue
                obj["segmentation"] = seg
            objs.append(obj)
        record["annotations"] = objs
        dataset_dicts.append(record)
    for kind, items in problems.items():
        shown = "; ".join(items[:3]) + (f"; ... ({len(items) - 3} more)" if len(items) > 3 else "")
        logger.warning("%s: skipped %d item(s) with %s: %s", os.path.basename(json_file), len(items), kind, shown)
    if img_ids and not dataset_dicts:
        raise DatasetNotFoundError(
            f"None of the {len(img_ids)} images of {json_file} exist under {image_root}; "
            f"check the image folder (first expected: {os.path.join(image_root, imgs[img_ids[0]]['file_name'])})"
        )
    return dataset_dicts


def _present_files(image_root: str, names) -> set:
    """The `names` (paths relative to image_root) that exist as files: one directory listing per folder
    instead of one stat per image (118k stats on every rank of every start, before the record cache)."""
    by_dir = {}
    for n in names:
        if isinstance(n, str):
            by_dir.setdefault(os.path.dirname(n), []).append(n)
    present = set()
    for d, members in by_dir.items():
        try:
            with os.scandir(os.path.join(image_root, d)) as it:
                files = {e.name for e in it if e.is_file()}
        except OSError:
            continue
        present.update(n for n in members if os.path.basename(n) in files)
    return present


def _where(json_file: str, img_id, ann: dict) -> str:
    return f"{json_file}: image id {img_id}, annotation id {ann.get('id')}"


_NUMBER_TYPES = frozenset((int, float))
_FLAG_TYPES = frozenset((int, bool))


_FLOAT_ONLY = frozenset((float,))


def _float_list(values) -> Optional[list]:
    """`values` as a list of finite floats (the same list when it already is one), or None when it is not a
    list of finite JSON numbers. One C-level pass for the types (bool, str, None are refused), one sum for
    NaN/Inf (finite exactly when every term is: coordinates never reach the 1e308 where finite terms overflow)."""
    if type(values) is not list:
        return None
    types = set(map(type, values))
    if types != _FLOAT_ONLY:
        if not types <= _NUMBER_TYPES:
            return None
        try:
            values = [float(v) for v in values]
        except OverflowError:  # an integer beyond float range
            return None
    return values if math.isfinite(sum(values)) else None


def _clean_polygons(seg: list):
    """(polygons as float lists with >= 3 points, None) or (None, the kind of problem); a polygon with fewer
    than 3 points is left out (the caller counts that)."""
    good = []
    for p in seg:
        # the common case inline (a list of finite floats); anything else through _float_list
        q = p if type(p) is list and set(map(type, p)) == _FLOAT_ONLY and math.isfinite(sum(p)) else _float_list(p)
        if q is None:
            if type(p) is list and set(map(type, p)) <= _NUMBER_TYPES:
                return None, "polygon with NaN/Inf coordinates"
            return None, "polygon with non-numeric coordinates"
        if len(q) >= 6 and len(q) % 2 == 0:
            good.append(q)
    return good, None


def _fast_ok(entries, field: str, required: bool, ok) -> bool:
    """True when every entry's `field` passes `ok`, tested type by type in C loops where it can be."""
    values = [e[field] for e in entries if field in e] if not required else list(map(itemgetter(field), entries))
    types = set(map(type, values))
    if ok is _is_int:
        return types <= {int}
    if ok is _positive_int:
        return types <= {int} and (not values or min(values) > 0)
    return all(map(ok, values))


def _check_unique_annotation_ids(json_file: str, data: dict) -> None:
    """Duplicate annotation ids make pycocotools keep one of them silently (and evaluation of
    the ground truth against itself scores AP ~0): refuse, naming the ids."""
    counts = Counter(a.get("id") for a in data["annotations"])
    dup = sorted((k for k, n in counts.items() if n > 1), key=str)
    if dup:
        shown = ", ".join(str(k) for k in dup[:5]) + (f" and {len(dup) - 5} more" if len(dup) > 5 else "")
        raise DatasetFormatError(
            f"{json_file}: {len(dup)} annotation id(s) used more than once ({shown}); "
            "every annotation needs its own 'id' (renumber them, e.g. 1..N)"
        )


def _checked_rle(seg: dict, height: int, width: int):
    """-> (compressed RLE with str counts, None) or (None, reason) for a malformed one (checked in Python
    first: pycocotools decodes short counts into uninitialised memory)."""
    import pycocotools.mask as mask_util

    why = rle_problem(seg, height, width)
    if why:
        return None, "malformed RLE" if "counts" in why or "needs" in why else "RLE whose size differs from the image"
    counts = seg["counts"]
    if isinstance(counts, list):
        seg = mask_util.frPyObjects({"size": [int(height), int(width)], "counts": counts}, height, width)
    else:
        seg = {
            "size": [int(height), int(width)],
            "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
        }
    return {"size": [int(height), int(width)], "counts": seg["counts"].decode("ascii")}, None


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "a non-finite number"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object", float: "a fraction"}.get(
        type(value), type(value).__name__
    )


def _bad_field(json_file: str, key: str, i: int, entry: dict, field: str, expected: str) -> DatasetFormatError:
    value = entry[field]
    ident = f" (id {entry['id']})" if field != "id" and isinstance(entry.get("id"), int) else ""
    return DatasetFormatError(
        f"{json_file}: {key}[{i}]{ident}: '{field}' = {short_repr(value, 60)} is {_type_name(value)}; expected "
        f"{expected}"
    )


def _is_int(v) -> bool:
    return type(v) is int


def _positive_int(v) -> bool:
    return type(v) is int and v > 0


# per list: (field, required, test, what is expected); an entry failing one is refused, naming file, entry, field
_ENTRY_FIELDS = {
    "images": (
        ("id", True, _is_int, "an integer id"),
        ("file_name", False, lambda v: type(v) is str and v != "", "a file name (a non-empty string)"),
        ("height", False, _positive_int, "the image height in pixels (an integer > 0)"),
        ("width", False, _positive_int, "the image width in pixels (an integer > 0)"),
    ),
    "annotations": (
        ("id", True, _is_int, "an integer id"),
        ("image_id", True, _is_int, "the integer id of an image"),
        ("category_id", True, _is_int, "the integer id of a category"),
    ),
    "categories": (
        ("id", True, _is_int, "an integer id"),
        ("name", True, lambda v: type(v) is str, "the category name (a string)"),
    ),
}


def check_coco_structure(json_file: str, data: dict) -> None:
    """The keys pycocotools indexes, with the right types, before it sees them: 'images', 'annotations' and
    'categories' are lists of objects; images have unique integer ids, and file_name (a string), height and width
    (integers > 0) where given; annotations have integer 'id', 'image_id' and 'category_id'; categories have an
    integer 'id' and a string 'name'. DatasetFormatError naming the file, the entry, the field and the type
    expected. (Fields of single annotations -- bbox, segmentation, iscrowd -- are checked by the loader, which
    skips and counts a bad one.)"""
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise DatasetFormatError(f"{json_file}: '{key}' must be a list of objects, got {type(data[key]).__name__}")
        for i, entry in enumerate(data[key]):
            if not isinstance(entry, dict):
                raise DatasetFormatError(f"{json_file}: {key}[{i}] must be an object, got {type(entry).__name__}")
    for key, fields in _ENTRY_FIELDS.items():
        entries = data[key]
        needed = frozenset(f for f, required, _, _ in fields if required)
        # fast path in C-level loops (857k annotations in COCO); the entry-by-entry loop below only names the culprit
        if all(map(needed.issubset, entries)) and all(
            _fast_ok(entries, f, required, ok) for f, required, ok, _ in fields
        ):
            continue
        for i, entry in enumerate(entries):
            for f, required, ok, expected in fields:
                if f not in entry:
                    if required:
                        raise DatasetFormatError(
                            f"{json_file}: {key}[{i}] has no '{f}'" + (" (add one to every entry)" if f == "id" else "")
                        )
                    continue
                if not ok(entry[f]):
                    raise _bad_field(json_file, key, i, entry, f, expected)
    counts = Counter(img["id"] for img in data["images"])
    dup = sorted((k for k, n in counts.items() if n > 1), key=str)
    if dup:
        shown = ", ".join(str(k) for k in dup[:5]) + (f" and {len(dup) - 5} more" if len(dup) > 5 else "")
        raise DatasetFormatError(
            f"{json_file}: {len(dup)} image id(s) used by more than one image ({shown}); every image needs its "
            "own 'id' (annotations refer to images by it)"
        )


def load_coco_json_cached(json_file: str, image_root: str, dataset_name: str):
    """load_coco_json through the record cache (detgn/data/record_cache.py): the first call on a machine
    parses and validates the file and writes a memory-mapped record file; later calls, other ranks and
    other runs map that file (records decoded on access) as long as the json is unchanged. Images are
    checked for existence when the file is built; one that disappears later is skipped and counted at
    read time in training. The dataset's metadata (thing_classes, id map) is restored from the file."""
    from ..record_cache import cached_records

    if not os.path.isfile(json_file):
        raise DatasetNotFoundError(
            f"Annotation file not found: {json_file} (check the path or DETGN_DATASETS; see datasets/README.md)"
        )
    if not os.path.isdir(image_root):
        raise DatasetNotFoundError(
            f"Image folder not found: {image_root} (for {json_file}; check the path or DETGN_DATASETS)"
        )

    def build():
        records = load_coco_json(json_file, image_root, dataset_name)
        meta = MetadataCatalog.get(dataset_name)
        return records, {
            "thing_classes": list(meta.thing_classes),
            "id_map": [[int(k), int(v)] for k, v in meta.thing_dataset_id_to_contiguous_id.items()],
        }

    # file names are joined to image_root as given: a relative root reached from elsewhere is another cache entry
    records, metadata = cached_records(
        dataset_name, build, [json_file], options=(image_root, os.path.realpath(image_root))
    )
    if isinstance(metadata, dict) and "id_map" in metadata:
        meta = MetadataCatalog.get(dataset_name)
        meta.thing_classes = list(metadata["thing_classes"])
        meta.thing_dataset_id_to_contiguous_id = {int(k): int(v) for k, v in metadata["id_map"]}
    return records


def register_coco_instances(name: str, metadata: Dict, json_file: str, image_root: str) -> None:
    """Register a COCO-format dataset under `name` (loaded lazily) with evaluator_type "coco"."""
    if not isinstance(name, str):
        raise TypeError("dataset name must be a string")
    DatasetCatalog.register(name, lambda: load_coco_json_cached(json_file, image_root, name))
    MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root, evaluator_type="coco", **metadata)
