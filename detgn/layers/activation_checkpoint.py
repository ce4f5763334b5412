"""Activation checkpointing: recompute a part's activations in the backward pass instead of keeping them.

`run_checkpointed(fn, *tensors, modules=...)` calls torch.utils.checkpoint (non-reentrant: it works with DDP,
no_sync, autocast and inputs that need no gradient) when the call builds a graph, and `fn(*tensors)` directly
otherwise (inference, frozen parts), where there is nothing to save. The recomputation runs the same kernels on the
same inputs (the RNG state is restored for it), so the gradients are those of the plain forward, bit for bit on CPU.

Where detgn uses it (MODEL.ACTIVATION_CHECKPOINT.PARTS): each block of a ResNet stage (only the blocks' inputs are
kept, mmdetection's `with_cp` granularity), the FPN's top-down pathway, the box head's tower and the mask head's
tower (each as one segment: only the pooled ROI features are kept).
"""

from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CHECKPOINT_PARTS", "run_checkpointed"]

# the names MODEL.ACTIVATION_CHECKPOINT.PARTS takes
CHECKPOINT_PARTS = ("stem", "res2", "res3", "res4", "res5", "fpn", "box_head", "mask_head")


def _needs_graph(tensors, modules: Iterable[nn.Module]) -> bool:
    if not torch.is_grad_enabled():
        return False
    if any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors):
        return True
    return any(p.requires_grad for m in modules for p in m.parameters())


def run_checkpointed(fn: Callable, *tensors, modules: Iterable[nn.Module] = ()):
    """fn(*tensors), its activations recomputed in the backward pass when a graph is built.

    Args:
        fn: the part's forward; takes and returns tensors (or tuples/lists/dicts of them).
        tensors: its inputs.
        modules: the modules whose parameters fn uses (a graph is built when one of them, or an input, needs
            gradients).
    """
    if not _needs_graph(tensors, list(modules)):
        return fn(*tensors)
    return checkpoint(fn, *tensors, use_reentrant=False, preserve_rng_state=True)
