"""ShapeSpec: the shape of a tensor that travels between modules as data."""

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ShapeSpec:
    """Channels, spatial size (height, width) and stride of a feature map; any may be None."""

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None
