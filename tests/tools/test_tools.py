"""The command-line tools run on tiny configurations and handle bad input by name."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUICK = os.path.join(REPO, "configs", "quick_schedules", "mask_rcnn_R_50_FPN_gn_instant_test.yaml")
TINY = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.FPN.OUT_CHANNELS", "64",
        "MODEL.ROI_BOX_HEAD.CONV_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128"]


def _tool(name, *args, timeout=600, cwd=REPO):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", name)] + list(args), capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


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
def test_demo_on_folder_with_a_bad_file(tmp_path, tiny_weights):
    src = os.path.join(REPO, "datasets", "nuclei_mini", "val")
    inp = tmp_path / "in"
    inp.mkdir()
    names = sorted(os.listdir(src))[:2]
    for n in names:
        shutil.copy(os.path.join(src, n), inp / n)
    (inp / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "output" / "demo"  # the default --output, under the working directory
    r = _tool("demo.py", "--config-file", QUICK, "--input", str(inp), str(tmp_path / "missing.png"),
              "--json", str(tmp_path / "det.json"), "--confidence-threshold", "0.3", "MODEL.WEIGHTS", tiny_weights, *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "precision for inference on cpu: float32" in r.stdout
    assert "broken.png" in r.stderr and "missing.png" in r.stderr
    written = sorted(os.listdir(out))
    assert written == sorted(os.path.splitext(n)[0] + ".png" for n in names)
    dets = json.load(open(tmp_path / "det.json"))
    assert isinstance(dets, list) and len(dets) > 0  # the tiny model's box bias makes confident detections
    assert all("bbox" in d and "segmentation" in d and d["score"] >= 0.3 for d in dets)
    assert {d["file_name"] for d in dets} <= {str(inp / n) for n in names}


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_benchmark_tool_train_eval_data(tmp_path):
    out = tmp_path / "bench.jsonl"
    for task in ("train", "eval", "data"):
        r = _tool("benchmark.py", "--config-file", QUICK, "--task", task, "--iters", "2", "--warmup", "1", "--size", "96",
                  "--max-size", "128", "--json", str(out), *TINY)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "images per second" in r.stdout and "peak memory (MB)" in r.stdout
    rows = [json.loads(l) for l in open(out)]
    assert [r["task"] for r in rows] == ["train", "eval", "data"] and all(r["median_s_per_iter"] > 0 for r in rows)
    # the frozen-BN twin of the model: BN statistics estimated on the inputs, then frozen
    bn = ["MODEL.RESNETS.NORM", "BN", "MODEL.FPN.NORM", "BN", "MODEL.ROI_BOX_HEAD.NORM", "BN", "MODEL.ROI_MASK_HEAD.NORM", "BN"]
    r = _tool("benchmark.py", "--config-file", QUICK, "--task", "train", "--iters", "1", "--warmup", "1", "--size", "96",
              "--max-size", "128", "--calibrate-bn", "2", *TINY, *bn, "SOLVER.BASE_LR", "0.0")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _tool("benchmark.py", "--config-file", QUICK, "--task", "train", "--iters", "1", "--size", "96", "--calibrate-bn", "2", *TINY)
    assert r.returncode == 2 and "needs BN layers" in r.stderr


def test_analyze_model_tool():
    r = _tool("analyze_model.py", "--config-file", QUICK, "--tasks", "parameter", "flop", "--size", "64", "--max-size", "96", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "parameters:" in r.stdout and "total GFLOPs at 64x96" in r.stdout
    assert "backbone" in r.stdout and "roi_heads" in r.stdout


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_plot_metrics_and_visualize_data(tmp_path):
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps({"iteration": i, "loss_cls": 1.0 / (i + 1), "lr": 0.01}) for i in range(5))
                                           + "\n" + json.dumps({"iteration": 4, "segm/AP": 12.0}) + "\n")
    r = _tool("plot_metrics.py", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for f in ("losses.png", "lr.png", "ap.png"):
        assert (tmp_path / f).stat().st_size > 1000
    r = _tool("plot_metrics.py", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not found" in r.stderr
    vis = tmp_path / "vis"
    r = _tool("visualize_data.py", "--config-file", QUICK, "--output", str(vis), "--num", "2")
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(vis)) == 2
