"""TorchScript and ONNX export: same detections as eager detgn at any input size, no torch needed for ONNX Runtime,
one-line refusals before any file is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from detgn.engine import DefaultPredictor
from detgn.export import ExportError, check_exportable, export_model, paste_masks, resized_size
from detgn.export.verify import compare_detections, exported_predictor, instances_to_numpy
from detgn.layers.mask_ops import paste_masks_in_image
from detgn.modeling import build_model

from tests.util import run_tool_here

from .conftest import REPO, calibrate_batch_norms, export_cfg, synthetic_state_dict

onnx = pytest.importorskip("onnx")  # `pip install -e .[dev]` (or [export]) installs onnx and onnxruntime
pytest.importorskip("onnxruntime")


def _op_types(graph):
    """Operator types of a graph and of its subgraphs (If / Loop bodies)."""
    for node in graph.node:
        yield node.op_type
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _op_types(sub)


@pytest.fixture(scope="module")
def exports(small_export_model, images, tmp_path_factory):
    cfg, model = small_export_model
    out = {}
    for fmt in ("torchscript", "onnx"):
        folder = tmp_path_factory.mktemp(fmt)
        out[fmt] = export_model(cfg, model, fmt=fmt, output_dir=str(folder / "export"), sample_image=images[0])
    return out


@pytest.fixture(scope="module")
def eager(small_export_model):
    cfg, _ = small_export_model
    return DefaultPredictor(cfg)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_same_detections_as_eager_at_two_sizes(exports, eager, images, fmt):
    """Traced on the first image's size, run on it and on an image of another size and aspect."""
    predictor = exported_predictor(exports[fmt]["model"])
    for image in images:
        ref = instances_to_numpy(eager(image)["instances"])
        got = predictor(image)
        assert len(ref["boxes"]) >= 20, "the synthetic weights should give many detections"
        assert got["masks"].shape[1:] == image.shape[:2]
        report = compare_detections(ref, got)
        assert report.ok, report.summary()


def test_export_folder_contents(exports, small_export_model):
    cfg, _ = small_export_model
    paths = exports["onnx"]
    meta = json.load(open(paths["meta"]))
    assert meta["input"]["channels"] == cfg.INPUT.FORMAT and meta["input"]["resize"]["min_size_test"] == 224
    assert meta["baked"]["TEST.DETECTIONS_PER_IMAGE"] == 50 and meta["opset"] == 17
    readme = open(paths["readme"]).read()
    assert "OnnxPredictor" in readme and "onnxruntime" in readme and os.path.isfile(paths["sample"])
    graph = onnx.load(paths["model"]).graph
    ops = list(_op_types(graph))
    # GN is written as its InstanceNormalization decomposition, one per GN layer of the model
    num_gn = sum(isinstance(m, torch.nn.GroupNorm) for m in small_export_model[1].modules())
    assert ops.count("InstanceNormalization") == num_gn and "GroupNormalization" not in ops
    assert {"RoiAlign", "NonMaxSuppression", "TopK"} <= set(ops)
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[1:]] == ["height", "width"]  # symbolic height and width


def test_opset_21_writes_native_group_normalization(small_export_model, images, eager, tmp_path):
    cfg, model = small_export_model
    paths = export_model(cfg, model, fmt="onnx", output_dir=str(tmp_path / "e21"), sample_image=images[0], opset=21)
    ops = list(_op_types(onnx.load(paths["model"]).graph))
    num_gn = sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert ops.count("GroupNormalization") == num_gn and "InstanceNormalization" not in ops
    report = compare_detections(
        instances_to_numpy(eager(images[1])["instances"]), exported_predictor(paths["model"])(images[1])
    )
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    "name,overrides",
    [
        (
            "frozen BN backbone, box head without norm, no mask head, ROIAlign v1",
            [
                "MODEL.RESNETS.NORM",
                "FrozenBN",
                "MODEL.ROI_BOX_HEAD.NORM",
                "",
                "MODEL.MASK_ON",
                "False",
                "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
                "ROIAlign",
            ],
        ),
        (
            "BN backbone and heads, RGB input, class-agnostic heads",
            [
                "MODEL.RESNETS.NORM",
                "BN",
                "MODEL.ROI_BOX_HEAD.NORM",
                "BN",
                "MODEL.ROI_MASK_HEAD.NORM",
                "BN",
                "INPUT.FORMAT",
                "RGB",
                "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG",
                "True",
                "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK",
                "True",
            ],
        ),
    ],
)
def test_other_supported_configs_export(images, tmp_path, name, overrides):
    """The norms and heads check_exportable accepts besides GN: exported graphs give eager's detections.

    The FPN keeps GN here: with synthetic weights and no FPN norm the RPN predicts boxes a thousandth of a
    pixel wide, whose IoU (the matching criterion) swings on 1e-4 px of float rounding; a trained model has none."""
    cfg = export_cfg()
    cfg.merge_from_list(overrides)
    model = build_model(cfg).eval()
    model.load_state_dict(synthetic_state_dict(model), strict=True)
    assert calibrate_batch_norms(model, images[0]) > 0
    torch.save({"model": model.state_dict()}, tmp_path / "w.pth")
    cfg.MODEL.WEIGHTS = str(tmp_path / "w.pth")
    eager = DefaultPredictor(cfg)
    path = export_model(cfg, eager.model, fmt="onnx", output_dir=str(tmp_path / "e"), sample_image=images[0])["model"]
    ref = instances_to_numpy(eager(images[1])["instances"])
    got = exported_predictor(path)(images[1])
    assert len(ref["boxes"]) >= 10 and ("masks" in got) == cfg.MODEL.MASK_ON
    report = compare_detections(ref, got)
    assert report.ok, report.summary()


def test_onnx_predictor_runs_without_torch(exports, images, tmp_path):
    """The ONNX Runtime predictor imports neither torch nor fvcore (they are blocked in the subprocess)."""
    np.save(tmp_path / "img.npy", images[1])
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "fvcore"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from detgn.export import OnnxPredictor
det = OnnxPredictor({exports["onnx"]["model"]!r})(np.load({str(tmp_path / "img.npy")!r}))
np.savez({str(tmp_path / "out.npz")!r}, **det)
print(len(det["boxes"]))
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    got = dict(np.load(tmp_path / "out.npz"))
    ref = exported_predictor(exports["onnx"]["model"])(images[1])
    assert int(r.stdout.strip()) == len(ref["boxes"]) > 0
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.RESNETS.NORM", "SyncBN", "MODEL.RESNETS.NORM 'SyncBN' cannot be exported"),
        ("MODEL.ROI_BOX_HEAD.NORM", "LN", "MODEL.ROI_BOX_HEAD.NORM 'LN' cannot be exported"),
        ("MODEL.ROI_HEADS.NAME", "MyHeads", "MODEL.ROI_HEADS.NAME 'MyHeads' cannot be exported"),
        ("MODEL.ROI_HEADS.NAME", "CascadeROIHeads", "MODEL.ROI_HEADS.NAME 'CascadeROIHeads' cannot be exported"),
        (
            "MODEL.META_ARCHITECTURE",
            "PanopticFPN",
            "'PanopticFPN' cannot be exported: .* semantic logits and the panoptic",
        ),
        (
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
            [False, True, True, True],
            "DEFORM_ON_PER_STAGE .* cannot be exported: .*deform_conv2d",
        ),
    ],
)
def test_unsupported_config_is_refused_before_writing(small_export_model, images, tmp_path, key, value, message):
    cfg = small_export_model[0].clone()
    cfg.merge_from_list([key, value])
    out = tmp_path / "export"
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace("[", r"\[")):
        export_model(cfg, small_export_model[1], fmt="onnx", output_dir=str(out), sample_image=images[0])
    assert not out.exists() and os.listdir(tmp_path) == []  # not even a temporary folder is left


def test_old_opset_and_unknown_format_are_refused():
    cfg = export_cfg()
    with pytest.raises(ExportError, match="opset >= 16"):
        check_exportable(cfg, "onnx", opset=13)
    with pytest.raises(ExportError, match="--format tflite"):
        check_exportable(cfg, "tflite")


def test_cli_refuses_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "export"
    argv = ["--config-file", os.path.join(REPO, "configs", "nuclei_quickstart.yaml"), "--format", "onnx"]
    status, _, err = run_tool_here("export_model", argv + ["--output", str(out), "MODEL.FPN.NORM", "SyncBN"], capsys)
    assert status == 2 and err.strip().count("\n") == 0, err[-2000:]
    assert "MODEL.FPN.NORM 'SyncBN' cannot be exported" in err and "NORM BN" in err
    assert not out.exists()


def test_numpy_postprocessing_equals_detgn():
    """The torch-free resize rule and mask pasting are detgn's own, pixel for pixel."""
    from detgn.data.transforms import _shortest_edge_size

    for h, w in [(256, 320), (384, 512), (100, 1000), (1000, 99), (800, 1333), (31, 33)]:
        for short, longest in [(224, 320), (800, 1333), (640, 10**9)]:
            assert resized_size(h, w, short, longest) == _shortest_edge_size(h, w, short, longest)
    rng = np.random.RandomState(0)
    probs = np.clip(rng.rand(40, 28, 28) * 0.4 + np.linspace(0, 1, 28)[None, None] * 0.6, 0, 1).astype(np.float32)
    x0, y0 = rng.uniform(-20, 300, 40), rng.uniform(-20, 200, 40)
    boxes = np.stack([x0, y0, x0 + rng.uniform(0.5, 150, 40), y0 + rng.uniform(0.5, 120, 40)], 1).astype(np.float32)
    ref = paste_masks_in_image(
        torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), (200, 300), threshold=0.5
    ).numpy()
    got = paste_masks(probs, boxes, 200, 300)
    assert ref.sum() > 1000 and np.array_equal(ref, got)


def test_demo_runs_exported_models(exports, small_export_model, images, tmp_path, capsys):
    """tools/demo.py --runtime onnxruntime / torchscript draws and writes the exported model's detections;
    a config that changes a setting traced into the graph is refused in one line."""
    cfg, _ = small_export_model
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    import cv2

    cv2.imwrite(str(tmp_path / "img.png"), images[1])
    expected = exported_predictor(exports["onnx"]["model"])(images[1])
    common = ["--config-file", str(cfg_file), "--input", str(tmp_path / "img.png")]
    for runtime, fmt in (("onnxruntime", "onnx"), ("torchscript", "torchscript")):
        out = tmp_path / runtime
        argv = common + ["--runtime", runtime, "--output", str(out), "--json", str(out / "det.json")]
        status, _, err = run_tool_here(
            "demo", argv + ["--confidence-threshold", "0.05", "MODEL.WEIGHTS", exports[fmt]["model"]], capsys
        )
        assert status == 0, err[-2000:]
        assert os.path.isfile(out / "img_pred.png")
        dets = json.load(open(out / "det.json"))
        assert len(dets) == int((expected["scores"] >= 0.05).sum()) > 0
    argv = common + [
        "--runtime",
        "onnxruntime",
        "--output",
        str(tmp_path / "x"),
        "MODEL.WEIGHTS",
        exports["onnx"]["model"],
    ]
    status, _, err = run_tool_here("demo", argv + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.3"], capsys)
    assert status == 2 and err.strip().count("\n") == 0
    assert "MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.3 differs from the exported model's 0.05" in err


def test_export_refuses_a_folder_holding_export_files(tmp_path):
    """A user's README.md or sample_input.png in --output is never replaced without --overwrite."""
    from detgn.export import ExportError, check_export_output

    check_export_output(str(tmp_path / "new"), "onnx")
    (tmp_path / "notes.txt").write_text("mine")
    check_export_output(str(tmp_path), "onnx")  # other files are left alone, so they do not block
    (tmp_path / "README.md").write_text("my readme")
    with pytest.raises(ExportError, match="already holds README.md; .*--overwrite"):
        check_export_output(str(tmp_path), "onnx")
    check_export_output(str(tmp_path), "onnx", overwrite=True)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ExportError, match="is a file"):
        check_export_output(str(tmp_path / "f"), "torchscript")
    assert (tmp_path / "README.md").read_text() == "my readme"
