"""Balanced positive/negative subsampling of labelled anchors or proposals."""

import torch

__all__ = ["subsample_labels"]


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int):
    """Pick at most num_samples * positive_fraction positives, fill with negatives.

    Args:
        labels: (N,) with -1 ignore, `bg_label` negative, anything else positive.
    Returns:
        pos_idx, neg_idx: 1-D index tensors, randomly chosen (uses the global torch RNG).
    """
    positive = ((labels != -1) & (labels != bg_label)).nonzero().squeeze(1)
    negative = (labels == bg_label).nonzero().squeeze(1)
    num_pos = int(num_samples * positive_fraction)
    num_pos = min(positive.numel(), num_pos)
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm1 = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm1], negative[perm2]
