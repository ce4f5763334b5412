"""Per-class NMS that keeps the top k: torchvision's batched_nms(...)[:k], on far fewer boxes.

Test-time box NMS runs over every (box, class) pair above the score threshold: with 1000
proposals and 80 classes up to 80,000 candidates, from which only the best 100 survivors are
kept. A box can only be suppressed by a higher-scoring box of its class, so the survivors among
the boxes scoring at least s are the same whether or not lower-scoring boxes take part. The
top k survivors are therefore found exactly on the highest-scoring candidates (all boxes with a
score >= the m-th best), growing m until k of them survive.

On CPU torchvision switches from its coordinate-offset trick to one NMS per class above 1000
boxes; the two can differ by float rounding (the offset moves boxes to large coordinates), so
for such inputs the candidates also go through one NMS per class, as torchvision would have
done with all boxes. Smaller inputs are passed to torchvision's batched_nms unchanged.
"""

import torch
from torchvision.ops import batched_nms, nms

__all__ = ["batched_nms_topk"]


def _vanilla_threshold(device: torch.device) -> int:
    return 4000 if device.type == "cpu" else 100_000  # torchvision's switch, in boxes.numel()


def _nms_per_class(boxes, scores, idxs, iou_threshold):
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        members = torch.where(idxs == class_id)[0]
        keep_mask[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    keep = torch.where(keep_mask)[0]
    return keep[scores[keep].sort(descending=True)[1]]


def batched_nms_topk(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float, topk: int
) -> torch.Tensor:
    """Indices of the (at most) `topk` best boxes kept by per-class NMS, in decreasing score order.

    Args:
        boxes: (N, 4) XYXY; scores: (N,); idxs: (N,) class of each box; topk < 0 keeps all survivors.
    Returns:
        int64 indices into the N boxes, equal to torchvision.ops.batched_nms(...)[:topk].
    """
    n = scores.numel()
    if torch.jit.is_tracing():  # a traced graph (export) keeps torchvision's op: the same kept boxes, one NMS
        keep = batched_nms(boxes, scores, idxs, iou_threshold)
        return keep if topk < 0 else keep[:topk]
    if topk < 0 or boxes.numel() <= _vanilla_threshold(boxes.device) or n <= 4 * topk:
        keep = batched_nms(boxes, scores, idxs, iou_threshold)
        return keep if topk < 0 else keep[:topk]
    m = max(8 * topk, 1000)
    while m < n:
        threshold = torch.topk(scores, m, sorted=False).values.min()
        cand = torch.nonzero(scores >= threshold).squeeze(1)  # ties at the threshold are all in
        keep = _nms_per_class(boxes[cand], scores[cand], idxs[cand], iou_threshold)
        if keep.numel() >= topk:
            return cand[keep[:topk]]
        m *= 4
    return _nms_per_class(boxes, scores, idxs, iou_threshold)[:topk]
