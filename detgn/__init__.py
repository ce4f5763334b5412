"""detgn: detection and instance segmentation with Group Normalization."""

__version__ = "0.1.0"
