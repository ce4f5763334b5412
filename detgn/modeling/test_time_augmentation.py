"""Test-time augmentation of an R-CNN: several sizes and flips of each image, one merged set of detections.

detectron2's semantics (`TEST.AUG.*`):

1. Each test image is turned into len(MIN_SIZES) x (1 + FLIP) inputs: resized so its short side is each size
   (long side <= MAX_SIZE), and each of those also flipped horizontally (the flip after the resize).
2. The detector runs on them without its mask head, BATCH_SIZE inputs per forward (3, as detectron2; with GN
   the padding of a batch is part of the normalisation statistics, so the grouping is part of the result).
3. Every augmentation's boxes are mapped back to the original image and merged by per-class NMS
   (the test NMS threshold, the detections-per-image cap, scores above 1e-8).
4. With a mask head: the merged boxes are mapped into every augmentation, the mask head runs on them there,
   flipped masks are flipped back, the mask probabilities are averaged over the augmentations and pasted at
   the original size.

Shapes: N augmented inputs per image, R merged detections, K foreground classes, M x M mask resolution.
"""

import copy
from typing import Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from detgn.config import configurable
from detgn.data.transforms import HFlipTransform, ResizeShortestEdge, ResizeTransform, TransformList
from detgn.structures import Boxes, Instances

from .postprocessing import detector_postprocess
from .roi_heads.fast_rcnn import fast_rcnn_inference_single_image

__all__ = ["DatasetMapperTTA", "GeneralizedRCNNWithTTA"]


class DatasetMapperTTA:
    """One test dict (the test mapper's "image" CHW uint8 tensor, "height", "width" of the original image) ->
    the list of augmented dicts, each with its "image" and "transforms" (original image -> that input)."""

    @configurable
    def __init__(self, *, min_sizes: Tuple[int, ...], max_size: int, flip: bool, resize_library: str = "opencv"):
        """min_sizes: short sides in pixels; max_size: cap of the long side in pixels; flip: add horizontal flips;
        resize_library: "opencv" or "pil" (INPUT.RESIZE_LIBRARY, data/transforms.py)."""
        self.resize_library = resize_library
        self.min_sizes = tuple(int(s) for s in min_sizes)
        self.max_size = int(max_size)
        self.flip = bool(flip)

    @classmethod
    def from_config(cls, cfg):
        return {
            "min_sizes": cfg.TEST.AUG.MIN_SIZES,
            "max_size": cfg.TEST.AUG.MAX_SIZE,
            "flip": cfg.TEST.AUG.FLIP,
            "resize_library": cfg.INPUT.RESIZE_LIBRARY,
        }

    def __call__(self, dataset_dict: Dict) -> List[Dict]:
        image = dataset_dict["image"].permute(1, 2, 0).numpy()  # (H', W', C) uint8, as the test mapper sized it
        shape = image.shape[:2]
        orig = (int(dataset_dict.get("height", shape[0])), int(dataset_dict.get("width", shape[1])))
        # the sizes below are taken from the image as given; "transforms" start at the original image
        pre = [ResizeTransform(orig[0], orig[1], shape[0], shape[1], self.resize_library)] if shape != orig else []
        out = []
        for size in self.min_sizes:
            resize = ResizeShortestEdge(size, self.max_size, "choice", self.resize_library).get_transform(
                image, np.random
            )
            resized = resize.apply_image(image)
            variants = [([resize], resized)]
            if self.flip:
                flip = HFlipTransform(resized.shape[1])
                variants.append(([resize, flip], flip.apply_image(resized)))
            for tfms, img in variants:
                d = copy.copy(dataset_dict)
                d["image"] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
                d["transforms"] = TransformList(pre + tfms)
                out.append(d)
        return out


def _has_flip(tfms: TransformList) -> bool:
    return any(isinstance(t, HFlipTransform) for t in tfms.transforms)


class GeneralizedRCNNWithTTA(nn.Module):
    """`model(batched_inputs)` -> [{"instances": Instances}] at each image's original size, as the wrapped
    GeneralizedRCNN returns them, from the test-time augmentations of DatasetMapperTTA (module docstring)."""

    def __init__(self, cfg, model: nn.Module, tta_mapper=None, batch_size: int = 3, feature_cache_mb: float = 1024):
        super().__init__()
        from .meta_arch.rcnn import GeneralizedRCNN

        inner = model.module if hasattr(model, "module") else model  # DistributedDataParallel
        if not isinstance(inner, GeneralizedRCNN):
            raise TypeError(f"test-time augmentation wraps a GeneralizedRCNN, got {type(inner).__name__}")
        self.cfg = cfg.clone()
        self.model = inner
        self.tta_mapper = tta_mapper if tta_mapper is not None else DatasetMapperTTA(cfg)
        self.batch_size = int(batch_size)
        self.num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
        # the box pass keeps each batch's FPN features for the mask pass while they fit in this budget (the same
        # numbers as computing them again: the same batch through the same backbone); beyond it they are recomputed
        self.feature_cache_bytes = int(feature_cache_mb * 2**20)

    def _box_pass(self, inputs: List[Dict]):
        """(raw detections at the augmented inputs' sizes, the features of each batch or None where over the
        budget), `batch_size` inputs per forward, in input order."""
        out, kept, used = [], [], 0
        m = self.model
        for i in range(0, len(inputs), self.batch_size):
            images = m.preprocess_image(inputs[i : i + self.batch_size])
            features = m.backbone(images.tensor)
            proposals, _ = m.proposal_generator(images, features, None)
            results, _ = m.roi_heads(images, features, proposals, None)
            out.extend(results)
            size = sum(f.numel() * f.element_size() for f in features.values())
            kept.append(features if used + size <= self.feature_cache_bytes else None)
            used += size if kept[-1] is not None else 0
        return out, kept

    def _mask_pass(self, inputs: List[Dict], detected: List[Instances], kept) -> List[Instances]:
        out = []
        m = self.model
        for b, i in enumerate(range(0, len(inputs), self.batch_size)):
            features = kept[b]
            if features is None:
                features = m.backbone(m.preprocess_image(inputs[i : i + self.batch_size]).tensor)
            given = [x.to(m.device) for x in detected[i : i + self.batch_size]]
            out.extend(m.roi_heads.forward_with_given_boxes(features, given))
            kept[b] = None
        return out

    def forward(self, batched_inputs: List[Dict]) -> List[Dict]:
        return [self._one_image(x) for x in batched_inputs]

    @torch.no_grad()
    def _one_image(self, inp: Dict) -> Dict:
        size = (int(inp.get("height", inp["image"].shape[1])), int(inp.get("width", inp["image"].shape[2])))
        augmented = self.tta_mapper(dict(inp, height=size[0], width=size[1]))
        tfms = [a.pop("transforms") for a in augmented]
        heads = self.model.roi_heads
        mask_on = getattr(heads, "mask_on", False)
        heads.mask_on = False  # boxes first: the mask head runs once the detections are merged
        try:
            outputs, kept = self._box_pass(augmented)
        finally:
            heads.mask_on = mask_on
        merged = self._merge(outputs, tfms, size)
        if not mask_on:
            return {"instances": detector_postprocess(merged, *size)}
        in_each = [self._into(merged, a, t) for a, t in zip(augmented, tfms)]
        with_masks = self._mask_pass(augmented, in_each, kept)
        for out, t in zip(with_masks, tfms):
            if _has_flip(t):
                out.pred_masks = out.pred_masks.flip(dims=[3])
        result = with_masks[0]
        result.pred_masks = torch.stack([o.pred_masks for o in with_masks]).mean(dim=0)  # (R, 1, M, M)
        return {"instances": detector_postprocess(result, *size)}

    def _merge(self, outputs: List[Instances], tfms: List[TransformList], size: Tuple[int, int]) -> Instances:
        """Every augmentation's detections in original-image coordinates, merged by per-class NMS."""
        boxes, scores, classes = [], [], []
        for out, t in zip(outputs, tfms):
            b = out.pred_boxes.tensor
            back = t.inverse().apply_box(b.cpu().numpy().astype(np.float32))
            boxes.append(torch.from_numpy(np.asarray(back, dtype=np.float32)).to(b.device))
            scores.append(out.scores)
            classes.append(out.pred_classes)
        boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
        scores_2d = torch.zeros(len(boxes), self.num_classes + 1, device=boxes.device)  # (sum Ri, K + 1)
        scores_2d[torch.arange(len(boxes), device=boxes.device), classes] = scores
        heads = self.model.roi_heads
        predictor = heads.box_predictor[-1] if isinstance(heads.box_predictor, nn.ModuleList) else heads.box_predictor
        merged, _ = fast_rcnn_inference_single_image(
            boxes, scores_2d, size, 1e-8, predictor.test_nms_thresh, predictor.test_topk_per_image
        )
        return merged

    @staticmethod
    def _into(merged: Instances, augmented: Dict, t: TransformList) -> Instances:
        """The merged detections in the coordinates of one augmented input."""
        boxes = t.apply_box(merged.pred_boxes.tensor.cpu().numpy().astype(np.float32))
        return Instances(
            tuple(augmented["image"].shape[1:3]),
            pred_boxes=Boxes(torch.from_numpy(np.asarray(boxes, dtype=np.float32))),
            pred_classes=merged.pred_classes,
            scores=merged.scores,
        )
