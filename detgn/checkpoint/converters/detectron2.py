"""detectron2's checkpoints (.pth state dicts, .pkl {"model": numpy arrays, "__author__"}) and detgn's own (
{"model": tensors, "optimizer", "scheduler", "iteration", ...}): the names are already detgn's."""

import numpy as np

from . import WeightsConverter, state_of, tensorize
from .caffe2 import looks_caffe2

__all__ = ["Detectron2Converter", "DetgnConverter"]


def _model_dict(obj) -> bool:
    return "model" in obj and isinstance(obj["model"], dict)


def _detectron2_pkl(obj) -> bool:
    return "__author__" in obj or any(isinstance(v, np.ndarray) for v in obj["model"].values())


class DetgnConverter(WeightsConverter):
    """A detgn checkpoint: everything it holds is kept (optimizer, scheduler, iteration: resume reads them)."""

    name = "detgn"

    def looks_like(self, obj):
        return _model_dict(obj) and not looks_caffe2(list(obj["model"])) and not _detectron2_pkl(obj)

    def convert(self, obj, backbone_prefix):
        out = dict(obj)
        out["model"] = tensorize(obj["model"])
        return out


class Detectron2Converter(WeightsConverter):
    """detectron2's files; also the fallback for a plain state dict of detgn names."""

    name = "detectron2"

    def looks_like(self, obj):
        return _model_dict(obj) and _detectron2_pkl(obj)

    def convert(self, obj, backbone_prefix):
        out = {"model": tensorize(state_of(obj) if "blobs" not in obj else obj)}
        if "iteration" in obj and "model" in obj:
            out["source_iteration"] = obj["iteration"]
        return out
