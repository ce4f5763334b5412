"""COCOEvaluator: predicted Instances -> COCO results -> COCOeval (bbox, segm): hotcoco by default, faster-coco-eval
or pycocotools (TEST.EVALUATOR_BACKEND); the ground truth is read and checked with pycocotools' COCO either way.

AP values are reported in percent, as detectron2 does. Results are gathered from all ranks
on the main process, which writes `instances_predictions.pth` and `coco_instances_results.json`.

Undefined metrics (the one place this is decided; `coco_stat_to_percent`): pycocotools' COCOeval
writes -1 into `stats` when a metric has nothing to average, e.g. APl on a dataset without large
ground-truth objects, or a category with no ground truth. detgn reports such a metric as NaN in
Python results, as `nan` in the log and in tools/evaluate_json.py, and as `null` in metrics.json
(JSON has no NaN). A real 0.0 (ground truth present, nothing found) stays 0.0.
"""

import contextlib
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
import torch
from pycocotools.coco import COCO
from tabulate import tabulate

from detgn.data import DatasetCatalog, MetadataCatalog
from detgn.structures import BoxMode
from detgn.utils import comm
from detgn.utils.atomic import atomic_write
from detgn.utils.errors import ConfigValueError

from .evaluator import DatasetEvaluator

__all__ = [
    "COCOEvaluator",
    "instances_to_coco_json",
    "evaluate_predictions_on_coco",
    "convert_to_coco_json",
    "METRIC_NAMES",
    "coco_stat_to_percent",
    "format_metric",
]


def coco_stat_to_percent(stat: float) -> float:
    """One COCOeval summary number (a fraction, -1 when undefined) -> percent, NaN when undefined."""
    return float(stat) * 100 if stat >= 0 else float("nan")


def format_metric(value: float, digits: int = 3) -> str:
    """A metric in percent for the log and the tools: fixed digits, `nan` when undefined."""
    return "nan" if value != value else f"{value:.{digits}f}"


logger = logging.getLogger(__name__)
METRIC_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def instances_to_coco_json(instances, img_id: int) -> List[Dict]:
    """Instances(pred_boxes, scores, pred_classes[, pred_masks]) -> COCO result dicts with XYWH boxes,
    contiguous category ids (mapped back later) and RLE masks (str counts)."""
    n = len(instances)
    if n == 0:
        return []
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy()
    boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS).tolist()
    scores = instances.scores.tolist()
    classes = instances.pred_classes.tolist()
    rles = None
    if instances.has("pred_masks"):
        masks = instances.pred_masks.detach().cpu().numpy()
        rles = [mask_util.encode(np.array(m[:, :, None], order="F", dtype=np.uint8))[0] for m in masks]
        for r in rles:
            r["counts"] = r["counts"].decode("utf-8")
    out = []
    for k in range(n):
        res = {"image_id": img_id, "category_id": classes[k], "bbox": boxes[k], "score": scores[k]}
        if rles is not None:
            res["segmentation"] = rles[k]
        out.append(res)
    return out


def convert_to_coco_json(dataset_name: str, output_file: str) -> str:
    """Write a COCO-format ground-truth json for a registered dataset without one (cached)."""
    if os.path.exists(output_file):
        return output_file
    dicts = DatasetCatalog.get(dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    classes = meta.get("thing_classes") or sorted({a["category_id"] for d in dicts for a in d.get("annotations", [])})
    reverse = {v: k for k, v in meta.get("thing_dataset_id_to_contiguous_id", {}).items()}
    categories = [{"id": reverse.get(i, i), "name": str(n)} for i, n in enumerate(classes)]
    images, anns = [], []
    for d in dicts:
        images.append({"id": d["image_id"], "width": d["width"], "height": d["height"], "file_name": d["file_name"]})
        for a in d.get("annotations", []):
            bbox = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYWH_ABS)
            ann = {
                "id": len(anns) + 1,
                "image_id": d["image_id"],
                "bbox": [float(x) for x in bbox],
                "iscrowd": int(a.get("iscrowd", 0)),
                "category_id": reverse.get(a["category_id"], a["category_id"]),
            }
            seg = a.get("segmentation")
            if seg is not None:
                if isinstance(seg, list):
                    rle = mask_util.merge(mask_util.frPyObjects(seg, d["height"], d["width"]))
                    ann["segmentation"] = seg
                else:
                    rle = seg if not isinstance(seg.get("counts"), list) else mask_util.frPyObjects(seg, *seg["size"])
                    ann["segmentation"] = {
                        "size": rle["size"],
                        "counts": rle["counts"].decode() if isinstance(rle["counts"], bytes) else rle["counts"],
                    }
                ann["area"] = float(mask_util.area(rle))
            else:
                ann["area"] = float(bbox[2] * bbox[3])
            anns.append(ann)
    os.makedirs(os.path.dirname(os.path.abspath(output_file)), exist_ok=True)
    with atomic_write(output_file) as f:
        json.dump(
            {"images": images, "annotations": anns, "categories": categories, "info": {"description": dataset_name}}, f
        )
    return output_file


BACKENDS = ("hotcoco", "faster_coco_eval", "pycocotools")


def _hotcoco_gt(coco_gt: COCO):
    """The hotcoco.COCO of a pycocotools ground truth, made once per ground-truth object (from its dataset dict)."""
    hc = getattr(coco_gt, "_detgn_hotcoco", None)
    if hc is None:
        try:
            import hotcoco
        except ImportError as e:
            raise ImportError("TEST.EVALUATOR_BACKEND hotcoco needs `pip install hotcoco`") from e
        hc = hotcoco.COCO(coco_gt.dataset)
        coco_gt._detgn_hotcoco = hc
    return hc


def _run_hotcoco(coco_gt: COCO, results: List[Dict], iou_type: str, img_ids):
    import hotcoco

    gt = _hotcoco_gt(coco_gt)
    ev = hotcoco.COCOeval(gt, gt.load_res(results), iou_type)
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # summarize() prints the table; the caller logs it
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _cocoeval_class(backend: str):
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCOeval_faster

            return COCOeval_faster
        except ImportError as e:
            raise ImportError("TEST.EVALUATOR_BACKEND faster_coco_eval needs `pip install faster-coco-eval`") from e
    if backend != "pycocotools":
        raise ConfigValueError(f"TEST.EVALUATOR_BACKEND must be one of {', '.join(BACKENDS)}, got '{backend}'")
    from pycocotools.cocoeval import COCOeval

    return COCOeval


def empty_results_stats(coco_gt: COCO, img_ids: Optional[Sequence[int]] = None) -> List[float]:
    """The 12 COCOeval summary numbers of no detections at all: 0 where the ground truth has objects to find (all,
    small < 32^2, medium, large > 96^2 pixels of area, crowds excluded), -1 (undefined, as COCOeval says) where it
    has none, e.g. APl/ARl without large objects."""
    keep = None if img_ids is None else set(img_ids)
    areas = [
        a.get("area", 0)
        for a in coco_gt.dataset.get("annotations", [])
        if not a.get("iscrowd", 0) and (keep is None or a["image_id"] in keep)
    ]
    has = [
        bool(areas),
        any(a < 32**2 for a in areas),
        any(32**2 <= a < 96**2 for a in areas),
        any(a >= 96**2 for a in areas),
    ]
    ap = [has[0], has[0], has[0], has[1], has[2], has[3]]
    ar = [has[0], has[0], has[0], has[1], has[2], has[3]]
    return [0.0 if h else -1.0 for h in ap + ar]


def count_duplicates(results: Sequence[Dict]) -> int:
    """How many results repeat an earlier one exactly (image, category, score, box or mask): COCOeval scores each
    copy as a false positive, roughly halving AP for a file merged twice."""
    seen, dup = set(), 0
    for r in results:
        seg = r.get("segmentation")
        key = (
            r.get("image_id"),
            r.get("category_id"),
            r.get("score"),
            tuple(r["bbox"]) if isinstance(r.get("bbox"), (list, tuple)) else None,
            (seg.get("counts") if isinstance(seg, dict) else repr(seg)) if seg is not None else None,
        )
        try:
            if key in seen:
                dup += 1
            else:
                seen.add(key)
        except TypeError:  # an unhashable field: not an exact copy this check can see
            continue
    return dup


def evaluate_predictions_on_coco(
    coco_gt: COCO,
    results: List[Dict],
    iou_type: str,
    img_ids: Optional[Sequence[int]] = None,
    backend: str = "hotcoco",
):
    """Run COCOeval; returns the evaluator (its .stats holds the 12 summary numbers). Exact duplicate results are
    scored as COCO scores them (false positives), with a WARNING giving their count."""
    assert len(results) > 0
    dup = count_duplicates(results)
    if dup:
        logger.warning(
            "%d of the %d %s results are exact duplicates of another (same image, category, score and %s): COCOeval "
            "counts each copy as a false positive, lowering AP; were results merged twice?",
            dup,
            len(results),
            iou_type,
            "box" if iou_type == "bbox" else "mask",
        )
    # the evaluators add fields (id, area, bbox) to the result dicts: they get copies (one level below too, where
    # a mask dict is), never the caller's (a deep copy of 500,000 results took 4.7 s)
    results = [
        dict(r, segmentation=dict(r["segmentation"])) if isinstance(r.get("segmentation"), dict) else dict(r)
        for r in results
    ]
    if iou_type == "segm":
        for r in results:
            r.pop("bbox", None)  # loadRes recomputes bbox from the mask
    if backend == "hotcoco":
        ev = _run_hotcoco(coco_gt, results, iou_type, img_ids)
        logger.info("COCOeval (%s, hotcoco):\n%s", iou_type, "\n".join(ev.summary_lines()))
        return ev
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(results)
    cls = _cocoeval_class(backend)
    ev = cls(coco_gt, coco_dt, iou_type)
    if img_ids is not None:
        ev.params.imgIds = list(img_ids)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    logger.info("COCOeval (%s, %s):\n%s", iou_type, backend, buf.getvalue())
    return ev


class COCOEvaluator(DatasetEvaluator):
    """Evaluates bbox and segm AP of a registered dataset with the official COCO API."""

    def __init__(
        self,
        dataset_name: str,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        backend: str = "hotcoco",
        gather_chunk: int = 256,
    ):
        self._dataset_name = dataset_name
        self._gather_chunk = gather_chunk
        self._distributed = distributed
        self._output_dir = output_dir
        self._backend = backend
        self._tasks = tuple(tasks) if tasks is not None else None
        meta = MetadataCatalog.get(dataset_name)
        self._metadata = meta
        json_file = meta.get("json_file")
        if not json_file or not os.path.exists(json_file):
            cache = os.path.join(output_dir or ".", f"{dataset_name}_coco_format.json")
            logger.info("Dataset '%s' has no COCO json; converting its dicts to %s", dataset_name, cache)
            if comm.is_main_process():  # only rank 0 writes files
                convert_to_coco_json(dataset_name, cache)
            comm.synchronize()
            json_file = cache
        from .coco_inputs import load_checked_coco_gt

        self._coco_api = load_checked_coco_gt(json_file)
        self._do_evaluation = "annotations" in self._coco_api.dataset
        id_map = meta.get("thing_dataset_id_to_contiguous_id")
        if id_map is None:
            cat_ids = sorted(self._coco_api.getCatIds())
            id_map = {v: i for i, v in enumerate(cat_ids)}
        self._reverse_id_map = {v: k for k, v in id_map.items()}
        self._class_names = meta.get("thing_classes") or [
            c["name"] for c in self._coco_api.loadCats(sorted(self._coco_api.getCatIds()))
        ]
        self.reset()

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        """Each image's detections as COCO result dicts (masks RLE-encoded here, on the rank that made them)."""
        for inp, out in zip(inputs, outputs):
            pred = {"image_id": inp["image_id"]}
            if "instances" in out:
                pred["instances"] = instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"])
            self._predictions.append(pred)

    def gathered_predictions(self):
        """Every rank's predictions on rank 0 (sent in chunks of `gather_chunk` images); None on the other ranks."""
        if not self._distributed:
            return self._predictions
        comm.synchronize()
        predictions = comm.gather_list(self._predictions, dst=0, chunk=self._gather_chunk)
        return predictions if comm.is_main_process() else None

    def evaluate(self, img_ids: Optional[Sequence[int]] = None):
        predictions = self.gathered_predictions()
        if predictions is None:
            return {}
        seen = set()
        unique = []
        for p in predictions:  # an image counted twice would bias AP
            if p["image_id"] not in seen:
                seen.add(p["image_id"])
                unique.append(p)
        predictions = unique
        if len(predictions) == 0:
            logger.warning("COCOEvaluator received no inputs; was the evaluation dataset empty?")
            return {}
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            torch.save(predictions, os.path.join(self._output_dir, "instances_predictions.pth"))
        return self._eval_predictions(predictions, img_ids)

    def _tasks_for(self, results):
        if self._tasks is not None:
            return self._tasks
        tasks = ["bbox"]
        if any("segmentation" in r for r in results):
            tasks.append("segm")
        elif not results and any("segmentation" in a for a in self._coco_api.dataset.get("annotations", [])):
            tasks.append("segm")  # nothing predicted: report both tasks the ground truth supports
        return tasks

    def _eval_predictions(self, predictions, img_ids=None):
        results = list(itertools.chain(*[p.get("instances", []) for p in predictions]))
        tasks = self._tasks_for(results)
        for r in results:
            cid = r["category_id"]
            if cid not in self._reverse_id_map:
                raise ValueError(
                    f"Predicted category {cid} is outside the dataset's {len(self._reverse_id_map)} classes; "
                    f"check MODEL.ROI_HEADS.NUM_CLASSES"
                )
            r["category_id"] = self._reverse_id_map[cid]
        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            with atomic_write(path) as f:
                json.dump(results, f)
            logger.info("Saved %d detections to %s", len(results), path)
        if not self._do_evaluation:
            logger.info("Ground truth has no annotations: results written, no AP computed")
            return {}
        if img_ids is None:
            img_ids = [p["image_id"] for p in predictions]
        out = OrderedDict()
        for task in tasks:
            task_results = [r for r in results if task != "segm" or "segmentation" in r]
            if len(task_results) == 0:
                logger.warning(
                    "No %s predictions on %s: AP 0 where the ground truth has objects, nan where it has none",
                    task,
                    self._dataset_name,
                )
                stats = empty_results_stats(self._coco_api, img_ids)
                out[task] = {m: coco_stat_to_percent(stats[i]) for i, m in enumerate(METRIC_NAMES)}
                with_gt = {
                    a["category_id"] for a in self._coco_api.dataset.get("annotations", []) if not a.get("iscrowd", 0)
                }
                out[task].update(
                    {
                        f"AP-{n}": 0.0 if self._reverse_id_map.get(i) in with_gt else float("nan")
                        for i, n in enumerate(self._class_names)
                    }
                )
                continue
            ev = evaluate_predictions_on_coco(self._coco_api, task_results, task, img_ids, self._backend)
            out[task] = self._derive_metrics(ev, task)
        return out

    def _derive_metrics(self, coco_eval, iou_type):
        stats = coco_eval.stats
        metrics = {m: coco_stat_to_percent(stats[i]) for i, m in enumerate(METRIC_NAMES)}
        precisions = coco_eval.eval["precision"]  # (iou, recall, cls, area, maxdets)
        per_cat = []
        for idx, name in enumerate(self._class_names):
            if idx >= precisions.shape[2]:
                break
            p = precisions[:, :, idx, 0, -1]
            p = p[p > -1]
            ap = float(np.mean(p) * 100) if p.size else float("nan")
            per_cat.append((name, ap))
            metrics[f"AP-{name}"] = ap
        table = tabulate(
            [[k, format_metric(v)] for k, v in list(metrics.items())[:6]], headers=["metric", iou_type], tablefmt="pipe"
        )
        logger.info("Evaluation results for %s:\n%s", iou_type, table)
        if len(per_cat) > 1:
            cat_table = tabulate(
                [[n, format_metric(a)] for n, a in per_cat], headers=["category", "AP"], tablefmt="pipe"
            )
            logger.info("Per-category %s AP:\n%s", iou_type, cat_table)
        return metrics
