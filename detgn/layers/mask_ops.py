"""Paste MxM mask probabilities into full images, memory-bounded (chunked).

Each mask is bilinearly sampled over its box (grid_sample, align_corners=False), so a
pixel centre (x + 0.5, y + 0.5) reads the mask at its relative position in the box.

The output itself, N x height x width bytes, is what grows without bound on large inputs (100
detections on a 12000 x 12000 image: 14.4 GB). Above MAX_MASK_BYTES (4 GiB by default; the
environment variable DETGN_MAX_MASK_BYTES overrides it) pasting is refused with one line before
anything is allocated.
"""

import os

import torch
from torch.nn import functional as F

from detgn.utils.errors import UserInputError

__all__ = ["paste_masks_in_image", "MaskMemoryError", "MAX_MASK_BYTES"]

MAX_MASK_BYTES = 4 * 1024**3


class MaskMemoryError(UserInputError, MemoryError):
    """Full-size masks of this many detections on an image this large would not fit the memory budget."""


def _mask_budget() -> int:
    try:
        return int(os.environ.get("DETGN_MAX_MASK_BYTES", MAX_MASK_BYTES))
    except ValueError:
        return MAX_MASK_BYTES


_BYTES_PER_FLOAT = 4
_GPU_MEM_LIMIT = 1024**3  # bytes of float32 pasting buffer per chunk on GPU


def _paste_chunk(masks, boxes, img_h, img_w, skip_empty):
    """masks (N, 1, M, M), boxes (N, 4) -> (N, h, w) probabilities and the (y0:y1, x0:x1) slice."""
    device = masks.device
    if skip_empty:  # only the region covered by the boxes (CPU: one mask at a time)
        x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(torch.int32)
        x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(torch.int32)
        y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(torch.int32)
        x1_int, y1_int = torch.maximum(x1_int, x0_int), torch.maximum(y1_int, y0_int)  # a box left of / above the image
    else:
        x0_int, y0_int = 0, 0
        x1_int, y1_int = img_w, img_h
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)  # each (N, 1)
    n = masks.shape[0]
    img_y = torch.arange(y0_int, y1_int, device=device, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, device=device, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    gx = img_x[:, None, :].expand(n, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(n, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    masks = masks.float()  # float32 grid and values: bf16 coordinates would shift masks by pixels
    img_masks = F.grid_sample(masks, grid, align_corners=False)
    if skip_empty:
        return img_masks[:, 0], (slice(int(y0_int), int(y1_int)), slice(int(x0_int), int(x1_int)))
    return img_masks[:, 0], ()


def paste_masks_in_image(
    masks: torch.Tensor, boxes: torch.Tensor, image_shape, threshold: float = 0.5, chunk_bytes: int = None
) -> torch.Tensor:
    """Paste per-box masks into the image.

    Args:
        masks: (N, M, M) or (N, 1, M, M) probabilities in [0, 1].
        boxes: (N, 4) XYXY boxes in image pixels.
        image_shape: (height, width).
        threshold: >= 0 returns bool masks (prob >= threshold); < 0 returns uint8 probabilities x 255.
        chunk_bytes: None = the device's strategy (CPU: one mask at a time over its box only; GPU:
            full-image chunks of at most 1 GiB of float32). An int forces full-image chunks of at
            most that many bytes on any device (the GPU strategy; tests use it on CPU).
    Returns:
        (N, height, width) masks on the device of `masks`.
    """
    if masks.dim() == 3:
        masks = masks[:, None]
    assert masks.shape[-1] == masks.shape[-2], "Only square masks are supported"
    n = len(masks)
    img_h, img_w = int(image_shape[0]), int(image_shape[1])
    if n == 0:
        return masks.new_empty((0, img_h, img_w), dtype=torch.bool if threshold >= 0 else torch.uint8)
    if n * img_h * img_w > _mask_budget():
        raise MaskMemoryError(
            f"{n} full-size masks of a {img_h}x{img_w} image need {n * img_h * img_w / 1e9:.1f} GB, above the "
            f"{_mask_budget() / 1e9:.1f} GB budget (DETGN_MAX_MASK_BYTES); downscale the image, lower "
            "TEST.DETECTIONS_PER_IMAGE, or raise DETGN_MAX_MASK_BYTES if the memory is there"
        )
    boxes = boxes.to(masks.device).float()
    per_box = chunk_bytes is None and masks.device.type == "cpu"
    if per_box:
        num_chunks = n  # one mask per chunk, pasted only where its box is
    else:
        limit = _GPU_MEM_LIMIT if chunk_bytes is None else chunk_bytes
        num_chunks = int(min(n, max(1, -(-n * img_h * img_w * _BYTES_PER_FLOAT // limit))))
    chunks = torch.chunk(torch.arange(n, device=masks.device), num_chunks)
    out = torch.zeros(n, img_h, img_w, device=masks.device, dtype=torch.bool if threshold >= 0 else torch.uint8)
    for inds in chunks:
        chunk, spatial = _paste_chunk(masks[inds], boxes[inds], img_h, img_w, skip_empty=per_box)
        if threshold >= 0:
            chunk = chunk >= threshold
        else:
            chunk = (chunk * 255).to(torch.uint8)
        out[(inds,) + spatial] = chunk
    return out
