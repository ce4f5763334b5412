"""Matcher: assigns each prediction (anchor / proposal) to a ground-truth box by IoU."""

from typing import List

import torch

__all__ = ["Matcher"]


class Matcher:
    """Thresholds split IoU into intervals labelled by `labels`.

    With thresholds [0.3, 0.7] and labels [0, -1, 1]: IoU < 0.3 -> 0 (negative),
    0.3 <= IoU < 0.7 -> -1 (ignored), IoU >= 0.7 -> 1 (positive). With
    `allow_low_quality_matches`, every GT's highest-IoU prediction(s) get label 1 too.
    """

    def __init__(self, thresholds: List[float], labels: List[int], allow_low_quality_matches: bool = False):
        thresholds = list(thresholds)
        if thresholds[0] < 0:
            raise ValueError("Matcher thresholds must be >= 0")
        thresholds.insert(0, -float("inf"))
        thresholds.append(float("inf"))
        if not all(lo <= hi for lo, hi in zip(thresholds[:-1], thresholds[1:])):
            raise ValueError(f"Matcher thresholds must be sorted: {thresholds}")
        if not all(l in (-1, 0, 1) for l in labels) or len(labels) != len(thresholds) - 1:
            raise ValueError(f"Matcher labels {labels} do not fit thresholds {thresholds[1:-1]}")
        self.thresholds = thresholds
        self.labels = labels
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, match_quality_matrix: torch.Tensor):
        """(M GT, N predictions) IoU -> matches (N,) GT index, match_labels (N,) in {-1, 0, 1}."""
        assert match_quality_matrix.dim() == 2
        if match_quality_matrix.numel() == 0:
            n = match_quality_matrix.size(1)
            default_matches = match_quality_matrix.new_full((n,), 0, dtype=torch.int64)
            default_labels = match_quality_matrix.new_full((n,), self.labels[0], dtype=torch.int8)
            return default_matches, default_labels
        matched_vals, matches = match_quality_matrix.max(dim=0)
        match_labels = matches.new_full(matches.size(), 1, dtype=torch.int8)
        for label, lo, hi in zip(self.labels, self.thresholds[:-1], self.thresholds[1:]):
            # masked_fill_, not match_labels[mask] = label: a boolean index is a nonzero (a host sync on CUDA)
            match_labels.masked_fill_((matched_vals >= lo) & (matched_vals < hi), label)
        if self.allow_low_quality_matches:
            # every prediction that is some ground truth's best match (ties included) is positive
            highest, _ = match_quality_matrix.max(dim=1)
            match_labels.masked_fill_((match_quality_matrix == highest[:, None]).any(dim=0), 1)
        return matches, match_labels
