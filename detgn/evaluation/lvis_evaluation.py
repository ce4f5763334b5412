"""LVIS evaluation (federated: a category is scored only on the images where it was looked for) by hotcoco's LVIS
mode, which gives the numbers of the `lvis` package (lvis-api) to the last bit (tests/evaluation/test_backends.py
compares them on constructed data; docs/benchmarks.md) without its numpy pin workarounds.

Predictions are made as COCO's (RLE on the rank that produced them, streamed to rank 0 in chunks), their
contiguous class ids mapped back to LVIS category ids, and evaluated with at most TEST.DETECTIONS_PER_IMAGE (300
in LVIS configs) per image. Metrics in percent: AP, AP50, AP75, APs, APm, APl and APr / APc / APf (rare, common,
frequent categories).
"""

import contextlib
import io
import json
import logging
import os
from collections import OrderedDict
from typing import Optional

import torch

from detgn.data import MetadataCatalog
from detgn.utils.atomic import atomic_write

from .coco_evaluation import COCOEvaluator, format_metric
from .evaluator import DatasetEvaluator

__all__ = ["LVISEvaluator", "LVIS_METRICS", "load_checked_lvis_gt", "evaluate_lvis"]

logger = logging.getLogger(__name__)
LVIS_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


def _hotcoco():
    try:
        import hotcoco
    except ImportError as e:
        raise ImportError(f"LVIS evaluation needs the 'hotcoco' package ({e}); pip install hotcoco") from None
    return hotcoco


class LVISEvaluator(DatasetEvaluator):
    """LVISEvaluator(dataset_name, tasks=("bbox", "segm"), distributed=True, output_dir=None, max_dets_per_image=300)."""

    def __init__(
        self,
        dataset_name: str,
        tasks=("bbox", "segm"),
        distributed: bool = True,
        output_dir: Optional[str] = None,
        max_dets_per_image: int = 300,
        gather_chunk: int = 256,
    ):
        meta = MetadataCatalog.get(dataset_name)
        self._dataset_name = dataset_name
        self._tasks = tuple(tasks)
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets = max_dets_per_image
        self._gather_chunk = gather_chunk
        self._gt = load_checked_lvis_gt(meta.json_file)
        self._reverse_id_map = (
            {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
            if meta.get("thing_dataset_id_to_contiguous_id")
            else {i: c for i, c in enumerate(sorted(c["id"] for c in self._gt.dataset["categories"]))}
        )
        self.reset()

    reset = COCOEvaluator.reset
    process = COCOEvaluator.process
    gathered_predictions = COCOEvaluator.gathered_predictions

    def evaluate(self):
        predictions = self.gathered_predictions()
        if predictions is None:
            return {}
        results = [
            dict(r, category_id=self._reverse_id_map[r["category_id"]])
            for p in predictions
            for r in p.get("instances", [])
        ]
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            torch.save(predictions, os.path.join(self._output_dir, "instances_predictions.pth"))
            path = os.path.join(self._output_dir, "lvis_instances_results.json")
            with atomic_write(path) as f:
                json.dump(results, f)
        return evaluate_lvis(self._gt, results, self._tasks, self._max_dets)


def load_checked_lvis_gt(json_file: str):
    """hotcoco.LVIS of `json_file` after the checks of the loader (structure, LVIS's own fields) and of COCO ground
    truth (bbox, area, iscrowd, segmentation types): a wrong type is one line naming the entry, not an error inside
    the evaluator. The file is parsed once (hotcoco is given the checked data)."""
    from detgn.data.datasets.coco import _read_json, check_coco_structure
    from detgn.data.datasets.lvis import _check_lvis_fields

    from .coco_inputs import _check_gt_fields

    data = _read_json(json_file)
    check_coco_structure(json_file, data)
    _check_lvis_fields(json_file, data)
    for i, ann in enumerate(data["annotations"]):
        _check_gt_fields(json_file, i, ann)
    return _hotcoco().LVIS(data)


def evaluate_lvis(lvis_gt, results, tasks, max_dets: int = 300):
    """{task: {metric: percent}} of LVIS evaluation on `results` (LVIS category ids); all 0 for a task without
    results."""
    hotcoco = _hotcoco()
    out = OrderedDict()
    for task in tasks:
        task_results = [dict(r) for r in results if task == "bbox" or "segmentation" in r]
        if task == "segm":
            for r in task_results:
                r.pop("bbox", None)  # LVISResults derives area and box from the mask then (as detectron2 passes them)
        if not task_results:
            logger.warning("No %s predictions: reporting LVIS AP 0", task)
            out[task] = {m: 0.0 for m in LVIS_METRICS}
            continue
        ev = hotcoco.LVISeval(lvis_gt, hotcoco.LVISResults(lvis_gt, task_results, max_dets=max_dets), task)
        with contextlib.redirect_stdout(io.StringIO()):
            ev.run()
        res = ev.get_results()
        out[task] = {m: float(res[m]) * 100 for m in LVIS_METRICS}
        logger.info("LVIS %s: %s", task, "  ".join(f"{m} {format_metric(v)}" for m, v in out[task].items()))
    return out
