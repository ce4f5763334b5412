"""detgn/checkpoint/converters: a new weights format is one module with one WeightsConverter, registered in the
table; detection and conversion go through it like the built-in formats; the table refuses a second format of the
same name."""

import pytest
import torch

from detgn.checkpoint import DetectionCheckpointer
from detgn.checkpoint.converters import (
    CONVERTERS,
    WeightsConverter,
    detect_format,
    register_converter,
    tensorize,
    unregister_converter,
)
from detgn.checkpoint.formats import convert_to_detgn
from detgn.checkpoint.formats import WeightsFormatError


class SlashNames(WeightsConverter):
    """A made-up format: {"net": {"backbone/stem/conv1/kernel": array, ...}}, names with slashes, "kernel" for weight."""

    name = "slashes"
    note = "slash-named weights: BGR input"

    def looks_like(self, obj):
        return "net" in obj and all("/" in k for k in obj["net"])

    def convert(self, obj, backbone_prefix):
        renamed = {}
        for k, v in obj["net"].items():
            parts = k.split("/")
            leaf = {"kernel": "weight"}.get(parts[-1], parts[-1])
            renamed[backbone_prefix + ".".join(parts[1:-1] + [leaf])] = v
        return {"model": tensorize(renamed)}


@pytest.fixture
def slashes():
    conv = register_converter(SlashNames(), first=True)
    yield conv
    unregister_converter("slashes")


def test_a_new_format_is_one_converter(slashes, caplog, tmp_path):
    import logging

    model = torch.nn.Module()
    model.backbone = torch.nn.Module()
    model.backbone.bottom_up = torch.nn.Module()
    model.backbone.bottom_up.stem = torch.nn.Module()
    model.backbone.bottom_up.stem.conv1 = torch.nn.Conv2d(3, 4, 3, bias=False)
    weight = torch.arange(4 * 3 * 9, dtype=torch.float32).reshape(4, 3, 3, 3)
    obj = {"net": {"backbone/stem/conv1/kernel": weight.numpy()}}
    assert detect_format(obj) == "slashes"
    with caplog.at_level(logging.INFO, logger="detgn.checkpoint.formats"):
        out = convert_to_detgn(obj, model.state_dict(), source="my.weights")
    assert out["format"] == "slashes" and "slash-named weights" in caplog.text
    assert torch.equal(out["model"]["backbone.bottom_up.stem.conv1.weight"], weight)
    # through the checkpointer, as any other file: the load report counts it as matched
    path = str(tmp_path / "slashes.pkl")
    import pickle

    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)
    DetectionCheckpointer(model).load(path)
    assert torch.equal(model.backbone.bottom_up.stem.conv1.weight, weight)


def test_the_table(slashes):
    assert CONVERTERS[0] is slashes and [c.name for c in CONVERTERS][1:] == [
        "caffe2",
        "mmdet",
        "torchvision",
        "detgn",
        "detectron2",
    ]
    with pytest.raises(ValueError, match="'slashes' is already registered"):
        register_converter(SlashNames())
    with pytest.raises(WeightsFormatError, match="unknown weights format 'keras'; choose one of slashes, caffe2"):
        convert_to_detgn({"model": {}}, {}, fmt="keras")
    # an explicit format goes to that converter whatever the content looks like
    assert convert_to_detgn({"net": {"a/b/kernel": torch.ones(1)}}, {}, fmt="slashes")["format"] == "slashes"
