"""batched_nms_topk == torchvision's batched_nms(...)[:k] on many classes and boxes."""

import pytest
import torch
from torchvision.ops import batched_nms

from detgn.layers.nms import batched_nms_topk


def _case(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 400
    wh = torch.rand(n, 2, generator=g) * 80 + 2
    boxes = torch.cat([xy, xy + wh], 1)
    scores = (torch.randperm(n, generator=g).float() + 1) / (n + 1)  # distinct: no tie-order ambiguity
    idxs = torch.randint(0, classes, (n,), generator=g)
    return boxes, scores, idxs


@pytest.mark.parametrize(
    "n,classes,topk",
    [(80000, 80, 100), (3000, 3, 100), (5000, 80, 10), (900, 5, 100), (20000, 1, 50), (6000, 80, -1), (2500, 2, 2000)],
)
def test_equals_torchvision(n, classes, topk):
    boxes, scores, idxs = _case(n, classes, seed=n + classes)
    ref = batched_nms(boxes, scores, idxs, 0.5)
    ref = ref if topk < 0 else ref[:topk]
    got = batched_nms_topk(boxes, scores, idxs, 0.5, topk)
    assert torch.equal(got, ref)


def test_clustered_boxes_need_more_candidates():
    """Heavy overlap: most top boxes are suppressed, so the candidate set has to grow."""
    boxes, scores, idxs = _case(30000, 4, seed=1)
    boxes = boxes * 0.05 + 100  # everything overlaps: a handful survive per class
    got = batched_nms_topk(boxes, scores, idxs, 0.5, 100)
    assert torch.equal(got, batched_nms(boxes, scores, idxs, 0.5)[:100])


def test_tied_scores_give_the_same_survivors():
    """With exact ties the order inside a tie is arbitrary (both sorts are unstable); the kept set and
    the score sequence are not."""
    boxes, _, idxs = _case(3000, 3, seed=3)
    scores = torch.randint(0, 500, (3000,), generator=torch.Generator().manual_seed(4)).float() / 500
    ref = batched_nms(boxes, scores, idxs, 0.5)
    got = batched_nms_topk(boxes, scores, idxs, 0.5, 100)  # 3000 boxes, top 100: the candidate path
    assert set(got.tolist()) <= set(ref.tolist())  # only true survivors
    assert torch.equal(scores[got], scores[ref[:100]])  # the same scores in the same order
