"""Parts of the training step rewritten so that they do not wait for the GPU: they must compute exactly what the
per-element / per-level code computed, and must not contain an operator that synchronises on CUDA (counted on CPU
by benchmarks/count_syncs.py's dispatch-mode counter)."""

import torch

from benchmarks.count_syncs import SyncOpCounter
from detgn.modeling import poolers
from detgn.modeling.matcher import Matcher
from detgn.modeling.poolers import ROIPooler
from detgn.structures import Boxes


def _pooler_case(seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 8, 256 // s, 320 // s, generator=g).requires_grad_() for s in (1, 2, 4, 8)]
    boxes = []
    for _ in range(2):
        xy = torch.rand(40, 2, generator=g) * 300
        wh = torch.rand(40, 2, generator=g) ** 2 * 900 + 2  # sizes across all four levels
        boxes.append(Boxes(torch.cat([xy, xy + wh], dim=1)))
    return feats, boxes


def test_pooler_groups_levels_with_one_read_and_equals_the_per_level_path(monkeypatch):
    pooler = ROIPooler(7, scales=[1 / 4, 1 / 8, 1 / 16, 1 / 32], sampling_ratio=0, pooler_type="ROIAlignV2")
    results = []
    for tracing in (False, True):  # True: the per-level nonzero path traced graphs keep
        monkeypatch.setattr(poolers, "is_tracing", lambda: tracing)
        feats, boxes = _pooler_case()
        with SyncOpCounter() as c:
            out = pooler(feats, boxes)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out, [f.grad for f in feats], sum(c.sites.values())))
    (a, ga, syncs_a), (b, gb, syncs_b) = results
    assert torch.equal(a, b) and all(torch.equal(x, y) for x, y in zip(ga, gb))
    levels = poolers.assign_boxes_to_levels(_pooler_case()[1], 2, 5)
    assert len(set(levels.tolist())) == 4  # the case uses every level
    assert syncs_a == 0 and syncs_b == 4  # (the one read of the counts is a .tolist(), a copy the counter cannot see)


def test_matcher_labels_without_a_sync_and_as_before():
    g = torch.Generator().manual_seed(0)
    iou = torch.rand(5, 300, generator=g)
    iou[2, 17] = iou[2].max() + 0.01  # a low-quality best match for ground truth 2
    iou[:, 40] = 0.0
    iou[3, 41] = iou[3].max()  # a tie for ground truth 3's best
    m = Matcher([0.3, 0.7], [0, -1, 1], allow_low_quality_matches=True)
    with SyncOpCounter() as c:
        matches, labels = m(iou)
    assert sum(c.sites.values()) == 0, c.sites
    vals, idx = iou.max(dim=0)
    expected = torch.where(vals >= 0.7, 1, torch.where(vals >= 0.3, -1, 0)).to(torch.int8)
    best = iou.max(dim=1, keepdim=True).values
    expected[(iou == best).any(dim=0)] = 1
    assert torch.equal(matches, idx) and torch.equal(labels, expected)
    assert labels[40] == 0 and labels[41] == 1
