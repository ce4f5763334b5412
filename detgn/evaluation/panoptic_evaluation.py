"""Panoptic quality (PQ, SQ, RQ) of COCO panoptic predictions, computed by hotcoco's panoptic evaluator.

hotcoco (Rust, on PyPI) implements cocodataset/panopticapi's `pq_compute`; tests/evaluation/
test_panoptic_evaluation.py pins every rule of panopticapi against values computed by hand, through this module:

- a predicted and a ground-truth segment of the same category match when IoU > 0.5 (0.5 itself does not match),
  where the union leaves out the predicted pixels on VOID (segment id 0) and the ground truth's area is the
  json's "area";
- crowd ground truth is never a false negative and never matched; an unmatched prediction is not a false
  positive when more than half of it lies on VOID plus the crowd region of its own category;
- per category PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2), counts summed
  over all images first; a category without ground truth and predictions is left out of the means.

Where panopticapi divides by zero (no stuff category at all) the result here is nan. Percent, as the other
evaluators.
"""

import io
import json
import logging
import os
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from detgn.data.catalog import MetadataCatalog
from detgn.utils import comm
from detgn.utils.errors import UserInputError

from .evaluator import DatasetEvaluator

__all__ = ["COCOPanopticEvaluator", "PanopticInputError", "evaluate_panoptic", "id2rgb", "rgb2id"]

logger = logging.getLogger(__name__)

_GROUPS = (("All", ""), ("Things", "_th"), ("Stuff", "_st"))


class PanopticInputError(UserInputError, ValueError):
    """Panoptic ground truth or predictions that cannot be scored (ids, sizes, categories that do not agree)."""


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) segment ids < 2**24 -> (H, W, 3) uint8, COCO panoptic's encoding (id = R + 256 G + 256^2 B)."""
    ids = np.asarray(ids, dtype=np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (H, W) uint32 segment ids (inverse of id2rgb)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _nan_if_undefined(v: float) -> float:
    return float("nan") if v is None or v < 0 else float(v)


def evaluate_panoptic(
    gt_json: Dict, pred_annotations: List[Dict], gt_folder: str, pred_folder: str
) -> Tuple[Dict[str, Dict[str, float]], Dict[int, Dict[str, float]]]:
    """PQ of predictions against COCO panoptic ground truth, both as panopticapi reads them.

    gt_json: the panoptic json as a dict ("images", "annotations", "categories" with "isthing"); pred_annotations:
    one {"image_id", "file_name", "segments_info": [{"id", "category_id"}]} per image of gt_json; the folders hold
    the PNGs named by "file_name". Returns ({"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}} as fractions,
    {category id: {"pq", "sq", "rq", "tp", "fp", "fn", "iou"}}); nan where a value is undefined."""
    from hotcoco.panoptic import PanopticEval

    try:
        ev = PanopticEval(gt_json, {"annotations": pred_annotations}, gt_folder=gt_folder, pred_folder=pred_folder)
        ev.evaluate()
        res = ev.results()
    except (ValueError, OSError, KeyError) as e:  # hotcoco names the image and segment
        raise PanopticInputError(f"panoptic evaluation: {e}") from e
    summary = {}
    for group, _ in _GROUPS:
        r = res[group]
        summary[group] = {k: _nan_if_undefined(r[k]) for k in ("pq", "sq", "rq")}
        summary[group]["n"] = int(r["n"])
    per_class = {}
    for cid, r in res["per_class"].items():
        counted = r["tp"] + r["fp"] + r["fn"] > 0
        per_class[int(cid)] = {
            "pq": float(r["pq"]) if counted else float("nan"),
            "sq": float(r["sq"]) if counted else float("nan"),
            "rq": float(r["rq"]) if counted else float("nan"),
            "tp": int(r["tp"]),
            "fp": int(r["fp"]),
            "fn": int(r["fn"]),
            "iou": float(r["iou"]),
        }
    return summary, per_class


def load_panoptic_json(path: str) -> Dict:
    """The panoptic ground-truth json, with one-line errors for what evaluation needs of it."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError as e:
        raise PanopticInputError(f"Panoptic json not found: {path} (check the path or DETGN_DATASETS)") from e
    except ValueError as e:
        raise PanopticInputError(f"Malformed json in {path}: {e}") from e
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        raise PanopticInputError(f"{path} is not a COCO panoptic file: it needs 'images', 'annotations', 'categories'")
    for c in data["categories"]:
        if not isinstance(c, dict) or "isthing" not in c or "id" not in c:
            raise PanopticInputError(f"{path}: category {c!r:.80} needs 'id' and 'isthing' (1 thing, 0 stuff)")
    return data


class COCOPanopticEvaluator(DatasetEvaluator):
    """Scores outputs' "panoptic_seg" ((H, W) int segment ids, segments_info) with PQ, SQ and RQ (all, things,
    stuff; per class in the log and in panoptic_evaluation.json). Predictions are encoded as PNG bytes on the
    process that made them, gathered on the main process (in chunks) and scored there against the dataset's
    panoptic json and PNG folder (metadata "panoptic_json", "panoptic_root"), restricted to the images evaluated.

    Category ids: a thing's "category_id" is the contiguous class of the detector (thing_dataset_id_to_contiguous_id
    inverted), a stuff segment's is the semantic label 1..S (stuff_dataset_id_to_contiguous_id inverted)."""

    def __init__(
        self,
        dataset_name: str,
        *,
        output_dir: Optional[str] = None,
        distributed: bool = True,
        gather_chunk: int = 256,
    ):
        meta = MetadataCatalog.get(dataset_name)
        missing = [k for k in ("panoptic_json", "panoptic_root") if meta.get(k) is None]
        if missing:
            raise PanopticInputError(
                f"Dataset '{dataset_name}' has no {' or '.join(missing)} in its metadata; register it with "
                "register_coco_panoptic_separated to evaluate PQ"
            )
        self._dataset_name = dataset_name
        self._json = meta.panoptic_json
        self._root = meta.panoptic_root
        self._thing_ids = {v: k for k, v in (meta.get("thing_dataset_id_to_contiguous_id") or {}).items()}
        self._stuff_ids = {v: k for k, v in (meta.get("stuff_dataset_id_to_contiguous_id") or {}).items()}
        self._output_dir = output_dir
        self._distributed = distributed
        self._gather_chunk = gather_chunk
        self.reset()

    def reset(self):
        self._predictions = []

    def _dataset_category(self, seg: Dict) -> int:
        table = self._thing_ids if seg["isthing"] else self._stuff_ids
        cid = int(seg["category_id"])
        if cid not in table:
            kind = "thing class" if seg["isthing"] else "stuff label"
            raise PanopticInputError(
                f"{self._dataset_name}: predicted {kind} {cid} has no dataset category; does the model's "
                "NUM_CLASSES match the dataset?"
            )
        return table[cid]

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            panoptic, segments = out["panoptic_seg"]
            panoptic = panoptic.cpu().numpy() if hasattr(panoptic, "cpu") else np.asarray(panoptic)
            with io.BytesIO() as buf:
                Image.fromarray(id2rgb(panoptic)).save(buf, format="PNG")
                png = buf.getvalue()
            self._predictions.append(
                {
                    "image_id": inp["image_id"],
                    "file_name": f"{inp['image_id']}.png",  # unique where file names repeat across folders
                    "png": png,
                    "segments_info": [
                        {"id": int(s["id"]), "category_id": self._dataset_category(s), "isthing": bool(s["isthing"])}
                        for s in segments
                    ],
                }
            )

    def evaluate(self):
        predictions = self._predictions
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            predictions = comm.gather_list(self._predictions, dst=0, chunk=self._gather_chunk)
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning("COCOPanopticEvaluator received no predictions; was the evaluation dataset empty?")
            return {}
        unique = {}
        for p in predictions:
            unique.setdefault(p["image_id"], p)
        gt = load_panoptic_json(self._json)
        by_image = {a["image_id"]: a for a in gt["annotations"]}
        absent = [i for i in unique if i not in by_image]
        if absent:
            raise PanopticInputError(
                f"{self._json}: no panoptic annotation for image id(s) {absent[:5]} of {self._dataset_name}; "
                "the instance and panoptic jsons must describe the same images"
            )
        gt = dict(gt, images=[im for im in gt["images"] if im["id"] in unique])
        gt["annotations"] = [by_image[i] for i in unique]
        with tempfile.TemporaryDirectory(prefix="detgn_panoptic_") as pred_dir:
            for p in unique.values():
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p["png"])
            annotations = [{k: v for k, v in p.items() if k != "png"} for p in unique.values()]
            summary, per_class = evaluate_panoptic(gt, annotations, self._root, pred_dir)
        res = OrderedDict()
        for group, suffix in _GROUPS:
            for k in ("pq", "sq", "rq"):
                res[k.upper() + suffix] = 100 * summary[group][k]
        names = {c["id"]: c.get("name", str(c["id"])) for c in gt["categories"]}
        self._log(summary, per_class, names)
        if self._output_dir:
            from detgn.utils.atomic import atomic_write_text

            os.makedirs(self._output_dir, exist_ok=True)
            atomic_write_text(
                os.path.join(self._output_dir, "panoptic_predictions.json"),
                json.dumps({"annotations": annotations}),
            )
            atomic_write_text(
                os.path.join(self._output_dir, "panoptic_evaluation.json"),
                json.dumps(
                    {
                        "summary": {k: (None if v != v else v) for k, v in res.items()},
                        "per_class": {
                            names.get(c, str(c)): {k: (None if v != v else v) for k, v in r.items()}
                            for c, r in per_class.items()
                        },
                    },
                    indent=1,
                ),
            )
        return OrderedDict({"panoptic_seg": res})

    @staticmethod
    def _log(summary, per_class, names):
        lines = [f"{'':10s} {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'#':>4s}"]
        for group, _ in _GROUPS:
            s = summary[group]
            lines.append(f"{group:10s} {100 * s['pq']:6.2f} {100 * s['sq']:6.2f} {100 * s['rq']:6.2f} {s['n']:4d}")
        logger.info("Panoptic evaluation:\n%s", "\n".join(lines))
        rows = [f"{'category':20s} {'PQ':>6s} {'SQ':>6s} {'RQ':>6s} {'TP':>5s} {'FP':>5s} {'FN':>5s}"]
        for cid, r in sorted(per_class.items()):
            rows.append(
                f"{names.get(cid, str(cid))[:20]:20s} {100 * r['pq']:6.2f} {100 * r['sq']:6.2f} {100 * r['rq']:6.2f} "
                f"{r['tp']:5d} {r['fp']:5d} {r['fn']:5d}"
            )
        logger.info("Panoptic quality per category:\n%s", "\n".join(rows))
