from .boxes import Boxes, BoxMode, pairwise_intersection, pairwise_iou
from .image_list import ImageList
from .instances import Instances
from .masks import BitMasks, PolygonMasks, bitmask_to_rle, polygons_to_bitmask, rle_to_bitmask

__all__ = [k for k in globals() if not k.startswith("_")]
