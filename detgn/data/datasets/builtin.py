"""Built-in dataset names, resolved under $DETGN_DATASETS (default ./datasets).

    coco_2017_train, coco_2017_val      coco/{train2017,val2017}/ + coco/annotations/instances_*2017.json
    coco_2017_val_100                   the first 100 images of coco_2017_val
    lvis_v1_train, lvis_v1_val          lvis/lvis_v1_{train,val}.json, images under coco/ (train2017/, val2017/)
    nuclei_mini_train, nuclei_mini_val  the bundled DSB 2018 nuclei subset (datasets/nuclei_mini/)
    coco_2017_{train,val}_panoptic_separated
                                        the instance json + coco/annotations/panoptic_*2017.json, coco/panoptic_*2017/
                                        and the semantic PNGs coco/panoptic_stuff_*2017/ (python -m
                                        detgn.data.prepare_panoptic makes them)
    nuclei_panoptic_{train,val}         nuclei_mini's images and nuclei (things) with tissue and background (stuff)
                                        (datasets/nuclei_panoptic/, made by datasets/make_nuclei_panoptic.py)

See datasets/README.md for the folder layouts.
"""

import os

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import register_coco_instances
from .coco_panoptic import register_coco_panoptic_separated
from .lvis import register_lvis_instances

_REPO_DATASETS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))), "datasets"
)

_COCO = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}
_LVIS = {
    "lvis_v1_train": ("coco", "lvis/lvis_v1_train.json"),
    "lvis_v1_val": ("coco", "lvis/lvis_v1_val.json"),
}
_NUCLEI = {
    "nuclei_mini_train": ("nuclei_mini/train", "nuclei_mini/annotations/train.json"),
    "nuclei_mini_val": ("nuclei_mini/val", "nuclei_mini/annotations/val.json"),
}

# name: (images, instances json, panoptic json, panoptic PNG folder, semantic PNG folder)
_COCO_PANOPTIC = {
    "coco_2017_train_panoptic_separated": (
        "coco/train2017",
        "coco/annotations/instances_train2017.json",
        "coco/annotations/panoptic_train2017.json",
        "coco/panoptic_train2017",
        "coco/panoptic_stuff_train2017",
    ),
    "coco_2017_val_panoptic_separated": (
        "coco/val2017",
        "coco/annotations/instances_val2017.json",
        "coco/annotations/panoptic_val2017.json",
        "coco/panoptic_val2017",
        "coco/panoptic_stuff_val2017",
    ),
}
_NUCLEI_PANOPTIC = {
    f"nuclei_panoptic_{split}": (
        f"nuclei_mini/{split}",
        f"nuclei_mini/annotations/{split}.json",
        f"nuclei_panoptic/panoptic_{split}.json",
        f"nuclei_panoptic/panoptic_{split}",
        f"nuclei_panoptic/semantic_{split}",
    )
    for split in ("train", "val")
}


def datasets_root() -> str:
    return os.path.expanduser(os.environ.get("DETGN_DATASETS", "datasets"))


def _resolve(rel: str, bundled: bool) -> str:
    path = os.path.join(datasets_root(), rel)
    if bundled and not os.path.exists(path):  # fall back to the copy inside the repository
        return os.path.join(_REPO_DATASETS, rel)
    return path


def _register_subset(name, parent, n):
    def load():
        return DatasetCatalog.get(parent)[:n]

    DatasetCatalog.register(name, load)
    meta = MetadataCatalog.get(parent).as_dict()
    meta.pop("name", None)
    MetadataCatalog.get(name).set(**meta)


def register_all_builtin():
    for name, (img, ann) in _COCO.items():
        if name not in DatasetCatalog:
            register_coco_instances(name, {}, _resolve(ann, False), _resolve(img, False))
    for name, (img, ann) in _LVIS.items():
        if name not in DatasetCatalog:
            register_lvis_instances(name, {}, _resolve(ann, False), _resolve(img, False))
    if "coco_2017_val_100" not in DatasetCatalog:
        _register_subset("coco_2017_val_100", "coco_2017_val", 100)
    for name, (img, ann) in _NUCLEI.items():
        if name not in DatasetCatalog:
            register_coco_instances(name, {"thing_classes": ["nucleus"]}, _resolve(ann, True), _resolve(img, True))
    for table, bundled in ((_COCO_PANOPTIC, False), (_NUCLEI_PANOPTIC, True)):
        for name, (img, ann, pan_json, pan_root, sem_root) in table.items():
            if name not in DatasetCatalog:
                register_coco_panoptic_separated(
                    name,
                    {},
                    image_root=_resolve(img, bundled),
                    panoptic_root=_resolve(pan_root, bundled),
                    panoptic_json=_resolve(pan_json, bundled),
                    sem_seg_root=_resolve(sem_root, bundled),
                    instances_json=_resolve(ann, bundled),
                )


register_all_builtin()
