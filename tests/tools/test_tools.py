"""The command-line tools run on tiny configurations and handle bad input by name."""

import json
import os
import shutil

import pytest
import torch

from tests.util import QUICK, REPO, TINY_MODEL, run_tool, run_tool_here, tool_module

TINY = TINY_MODEL


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from detgn.config import get_cfg
    from detgn.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # a box bias that gives confident detections
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([3.0, -3.0]))
    path = tmp_path_factory.mktemp("w") / "tiny.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_demo_on_folder_with_a_bad_file(tmp_path, tiny_weights, capsys, monkeypatch):
    src = os.path.join(REPO, "datasets", "nuclei_mini", "val")
    inp = tmp_path / "in"
    inp.mkdir()
    names = sorted(os.listdir(src))[:2]
    for n in names:
        shutil.copy(os.path.join(src, n), inp / n)
    (inp / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "output" / "demo"  # the default --output, under the working directory
    # options after the overrides are options, not swallowed; --json into a folder that does not exist yet
    monkeypatch.chdir(tmp_path)
    argv = ["--config-file", QUICK, "--input", str(inp), "--input", str(tmp_path / "missing.png")]
    argv += ["MODEL.WEIGHTS", tiny_weights, *TINY, "--json", str(tmp_path / "new" / "det.json")]
    status, stdout, err = run_tool_here("demo", argv + ["--confidence-threshold", "0.3"], capsys)
    assert status == 0, err[-2000:]
    assert "precision for inference on cpu: float32" in stdout
    assert "broken.png" in err and "missing.png" in err
    written = sorted(os.listdir(out))
    assert written == sorted(os.path.splitext(n)[0] + "_pred.png" for n in names)
    dets = json.load(open(tmp_path / "new" / "det.json"))
    assert isinstance(dets, list) and len(dets) > 0  # the tiny model's box bias makes confident detections
    assert all("bbox" in d and "segmentation" in d and d["score"] >= 0.3 for d in dets)
    assert {d["file_name"] for d in dets} <= {str(inp / n) for n in names}


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_demo_never_overwrites(tmp_path, tiny_weights, capsys):
    """Output next to its input; x.png and x.jpg; a rerun; no weights; an unwritable folder."""
    import cv2

    img = cv2.imread(
        os.path.join(
            REPO,
            "datasets",
            "nuclei_mini",
            "val",
            sorted(os.listdir(os.path.join(REPO, "datasets", "nuclei_mini", "val")))[0],
        )
    )
    cv2.imwrite(str(tmp_path / "x.png"), img)
    cv2.imwrite(str(tmp_path / "x.jpg"), img)
    before = {n: (tmp_path / n).read_bytes() for n in ("x.png", "x.jpg")}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x_pred.png").write_bytes(b"the user's own file")
    base = ("--config-file", QUICK, "--input", str(tmp_path), "--output", str(tmp_path))  # results next to the inputs
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    one = ["--config-file", QUICK, "--input", str(tmp_path / "x.png"), "--output"]
    # an existing output, results next to the inputs, no weights, a read-only folder
    r_exists = run_tool_here("demo", one + [str(tmp_path / "out"), "MODEL.WEIGHTS", tiny_weights, *TINY], capsys)
    assert r_exists[0] == 2 and "x_pred.png exists" in r_exists[2] and "--overwrite" in r_exists[2], r_exists[2][-1500:]
    assert (tmp_path / "out" / "x_pred.png").read_bytes() == b"the user's own file"
    r_noweights = run_tool_here("demo", one + [str(tmp_path / "o"), *TINY], capsys)
    assert r_noweights[0] == 2 and "MODEL.WEIGHTS is empty" in r_noweights[2] and not (tmp_path / "o").exists()
    if os.geteuid() != 0:  # root writes anywhere
        r_ro = run_tool_here("demo", one + [str(ro), "MODEL.WEIGHTS", tiny_weights, *TINY], capsys)
        assert r_ro[0] == 2 and "cannot write into" in r_ro[2]
    status, stdout, err = run_tool_here("demo", [*base, "MODEL.WEIGHTS", tiny_weights, *TINY], capsys)
    assert status == 0, err[-1500:]
    assert "wrote 2 result(s)" in stdout
    assert {"x_pred.png", "x_2_pred.png"} <= set(os.listdir(tmp_path))  # x.png and x.jpg: two results
    assert {n: (tmp_path / n).read_bytes() for n in before} == before  # inputs untouched
    status, _, err = run_tool_here("demo", [*base, "MODEL.WEIGHTS", tiny_weights, *TINY], capsys)  # a rerun
    assert status == 2 and "is one of the inputs" in err  # its outputs are now inputs


def test_demo_output_plan_units(tmp_path):
    """plan_outputs / check_outputs without a model: unique stems, an output that is an input is refused."""
    demo = tool_module("demo")

    files = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), str(tmp_path / "x.jpg")]
    plan = demo.plan_outputs(files, str(tmp_path))
    assert list(plan.values()) == ["x", "x_2", "x_3"]
    (tmp_path / "x_pred.png").write_bytes(b"input")
    with pytest.raises(demo.OutputError, match="is one of the inputs"):
        demo.check_outputs(
            [str(tmp_path / "x_pred.png")], {str(tmp_path / "x_pred.png"): "x"}, str(tmp_path), None, True
        )
    demo.check_outputs(files, plan, str(tmp_path / "new"), str(tmp_path / "j" / "d.json"), False)
    assert (tmp_path / "j").is_dir() and (tmp_path / "new").is_dir()


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_benchmark_tool_train_eval_data(tmp_path, capsys):
    """The command line once (train, in a subprocess); eval, data and the frozen-BN options in this process
    (benchmark.main, the same code the command runs, without paying torch's import four more times)."""
    benchmark = tool_module("benchmark")

    out = tmp_path / "bench.jsonl"
    common = [
        "--config-file",
        QUICK,
        "--iters",
        "2",
        "--warmup",
        "1",
        "--size",
        "96",
        "--max-size",
        "128",
        "--json",
        str(out),
        *TINY,
    ]
    r = run_tool("benchmark.py", "--task", "train", *common)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "images per second" in r.stdout and "peak memory (MB)" in r.stdout and "warm-up (s):" in r.stdout
    for task in ("eval", "data"):
        assert benchmark.main(["--task", task, *common]) == 0
        assert "images per second" in capsys.readouterr().out
    rows = [json.loads(l) for l in open(out)]
    assert [r["task"] for r in rows] == ["train", "eval", "data"] and all(r["median_s_per_iter"] > 0 for r in rows)
    assert all(len(r["warmup_s"]) == 1 and r["compiled_parts"] == [] for r in rows)
    # the frozen-BN twin of the model: BN statistics estimated on the inputs, then frozen
    bn = [
        "MODEL.RESNETS.NORM",
        "BN",
        "MODEL.FPN.NORM",
        "BN",
        "MODEL.ROI_BOX_HEAD.NORM",
        "BN",
        "MODEL.ROI_MASK_HEAD.NORM",
        "BN",
    ]
    assert (
        benchmark.main(
            [
                "--config-file",
                QUICK,
                "--task",
                "train",
                "--iters",
                "1",
                "--warmup",
                "1",
                "--size",
                "96",
                "--max-size",
                "128",
                "--calibrate-bn",
                "2",
                *TINY,
                *bn,
            ]
        )
        == 0
    )
    assert (
        benchmark.main(
            ["--config-file", QUICK, "--task", "train", "--iters", "1", "--size", "96", "--calibrate-bn", "2", *TINY]
        )
        == 2
    )
    assert "needs BN layers" in capsys.readouterr().err


def test_analyze_model_tool(capsys):
    argv = ["--config-file", QUICK, "--tasks", "parameter", "flop", "--size", "64", "--max-size", "96", *TINY]
    status, stdout, err = run_tool_here("analyze_model", argv, capsys)
    assert status == 0, err[-2000:]
    assert "parameters:" in stdout and "total GFLOPs at 64x96" in stdout
    assert "backbone" in stdout and "roi_heads" in stdout


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_plot_metrics_and_visualize_data(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(
        "\n".join(json.dumps({"iteration": i, "loss_cls": 1.0 / (i + 1), "lr": 0.01}) for i in range(5))
        + "\n"
        + json.dumps({"iteration": 4, "segm/AP": 12.0})
        + "\n"
    )
    status, _, err = run_tool_here("plot_metrics", [str(tmp_path)], capsys)
    assert status == 0, err
    for f in ("losses.png", "lr.png", "ap.png"):
        assert (tmp_path / f).stat().st_size > 1000
    status, _, err = run_tool_here("plot_metrics", [str(tmp_path / "nope")], capsys)
    assert status == 2 and "not found" in err
    vis = tmp_path / "vis"
    status, _, err = run_tool_here(
        "visualize_data", ["--config-file", QUICK, "--output", str(vis), "--num", "2"], capsys
    )
    assert status == 0, err
    assert len(os.listdir(vis)) == 2
    before = {f: os.stat(vis / f).st_mtime_ns for f in os.listdir(vis)}
    args = ["--config-file", QUICK, "--output", str(vis), "--num", "2"]
    status, _, err = run_tool_here("visualize_data", args, capsys)  # the same folder again: refused, untouched
    assert status == 2 and "2 picture(s) already in" in err and err.count("\n") == 1, err
    assert {f: os.stat(vis / f).st_mtime_ns for f in os.listdir(vis)} == before
    status, _, err = run_tool_here("visualize_data", args + ["--overwrite"], capsys)
    assert status == 0, err


def test_make_crop_dataset_never_mixes_runs(tmp_path, capsys):
    out = tmp_path / "crops"
    args = ["--output", str(out), "--val", "", "--size", "16", "--per-image", "1"]
    status, _, err = run_tool_here("make_crop_dataset", args, capsys)
    assert status == 0, err
    files = sorted(os.listdir(out / "train" / "nucleus"))
    status, _, err = run_tool_here("make_crop_dataset", args + ["--seed", "1"], capsys)
    assert status == 2 and "already holds crops" in err and err.count("\n") == 1, err
    assert sorted(os.listdir(out / "train" / "nucleus")) == files
    status, _, err = run_tool_here("make_crop_dataset", args + ["--overwrite"], capsys)
    assert status == 0, err


def test_large_inputs_are_bounded(monkeypatch):
    """Full-size masks are refused before allocation above the budget; demo downscales huge inputs first."""
    import numpy as np

    from detgn.layers.mask_ops import MaskMemoryError, paste_masks_in_image

    masks, boxes = torch.rand(100, 28, 28), torch.tensor([[0.0, 0.0, 50.0, 50.0]]).repeat(100, 1)
    with pytest.raises(MaskMemoryError, match="100 full-size masks of a 12000x12000 image need 14.4 GB"):
        paste_masks_in_image(masks, boxes, (12000, 12000))  # would allocate 14.4 GB
    monkeypatch.setenv("DETGN_MAX_MASK_BYTES", str(100 * 64 * 64 - 1))
    with pytest.raises(MaskMemoryError):
        paste_masks_in_image(masks, boxes, (64, 64))
    monkeypatch.delenv("DETGN_MAX_MASK_BYTES")
    assert paste_masks_in_image(masks, boxes, (64, 64)).shape == (100, 64, 64)
    demo = tool_module("demo")

    big = np.zeros((12000, 9000, 3), np.uint8)  # a large blank image
    small, scale = demo.fit_long_side(big, 4000)
    assert small.shape == (4000, 3000, 3) and scale == pytest.approx(1 / 3)
    assert demo.fit_long_side(small, 0)[0] is small


def test_benchmark_tool_checks_config_values(capsys):
    status, _, err = run_tool_here(
        "benchmark", ["--config-file", QUICK, "--task", "train", "MODEL.RESNETS.DEPTH", "17"], capsys
    )
    assert status == 2 and "MODEL.RESNETS.DEPTH" in err and err.strip().count("\n") == 0, err
