"""Helpers that keep inference code exact in eager mode and input-size generic when traced.

`torch.jit.trace` (used by TorchScript and ONNX export, detgn.export) records tensor operations;
Python decisions on sizes and values become constants of the graph. These helpers make the few
size-dependent decisions of detection inference (top-k counts, per-image splits) with tensor
operations while tracing, and are plain Python otherwise.
"""

from typing import List, Sequence

import torch

__all__ = ["is_tracing", "topk_size", "split_per_image"]


def is_tracing() -> bool:
    return torch.jit.is_tracing()


def topk_size(x: torch.Tensor, k: int, dim: int):
    """min(k, x.shape[dim]): an int in eager mode, a traced 0-d tensor while tracing."""
    if not is_tracing():
        return min(k, x.shape[dim])
    n = torch._shape_as_tensor(x)[dim]
    return torch.clamp(n, max=k)


def split_per_image(x: torch.Tensor, lengths: Sequence, dim: int = 0) -> List[torch.Tensor]:
    """x.split(lengths); a batch of one image returns [x] (no recorded constant length when traced)."""
    if len(lengths) == 1:
        return [x]
    return list(x.split([int(n) for n in lengths], dim=dim))
