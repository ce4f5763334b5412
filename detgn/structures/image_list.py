"""ImageList: a padded batch of images of different sizes plus their true sizes."""

from typing import List, Tuple

import torch
from torch.nn import functional as F

__all__ = ["ImageList"]


class ImageList:
    """`tensor` (N, C, Hmax, Wmax), zero-padded at bottom/right; `image_sizes` list of (h, w)."""

    def __init__(self, tensor: torch.Tensor, image_sizes: List[Tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx) -> torch.Tensor:
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    def to(self, *args, **kwargs) -> "ImageList":
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(tensors: List[torch.Tensor], size_divisibility: int = 0, pad_value: float = 0.0) -> "ImageList":
        """Pad (C, Hi, Wi) tensors to a common size divisible by `size_divisibility`."""
        assert len(tensors) > 0, "ImageList.from_tensors needs at least one image"
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(s[0] for s in image_sizes)
        max_w = max(s[1] for s in image_sizes)
        if size_divisibility > 1:
            s = size_divisibility
            max_h = (max_h + s - 1) // s * s
            max_w = (max_w + s - 1) // s * s
        if len(tensors) == 1:
            t = tensors[0]
            pad = [0, max_w - image_sizes[0][1], 0, max_h - image_sizes[0][0]]
            batched = F.pad(t, pad, value=pad_value).unsqueeze(0)
        else:
            shape = (len(tensors),) + tuple(tensors[0].shape[:-2]) + (max_h, max_w)
            batched = tensors[0].new_full(shape, pad_value)
            for i, t in enumerate(tensors):
                batched[i, ..., : t.shape[-2], : t.shape[-1]].copy_(t)
        return ImageList(batched.contiguous(), image_sizes)
