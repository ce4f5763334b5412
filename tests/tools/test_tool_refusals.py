"""Tools that refuse to guess: convert_weights, analyze_model, benchmark's units, demo's precision policy."""

import torch

from tests.util import QUICK, TINY_MODEL, run_tool_here, tool_module

TINY = TINY_MODEL


def test_convert_weights_needs_a_config_and_refuses_a_mismatching_one(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None, norm_layer=lambda c: torch.nn.GroupNorm(32, c))
    src = tmp_path / "r18_gn.pth"
    torch.save(tv.state_dict(), src)
    out = tmp_path / "out.pth"
    # no config, a ResNet-50 config, the right depth (into another file)
    status, _, err = run_tool_here("convert_weights", [str(src), str(out)], capsys)
    assert status == 2 and "--config-file" in err and not out.exists()
    status, stdout, err = run_tool_here("convert_weights", [str(src), str(out), "--config-file", QUICK], capsys)
    assert status == 2 and not out.exists(), stdout + err
    assert "does not fit" in err and "another shape" in err and "--allow-partial" in err
    status, _, err = run_tool_here(
        "convert_weights", [str(src), str(tmp_path / "r18.pth"), "--config-file", QUICK, *TINY], capsys
    )
    assert status == 0, err
    argv = [str(src), str(out), "--config-file", QUICK, "--allow-partial"]
    status, _, err = run_tool_here("convert_weights", argv, capsys)
    assert status == 0 and out.exists(), err
    assert len(torch.load(tmp_path / "r18.pth", weights_only=True)["model"]) == len(tv.state_dict()) - 2  # all but fc


def test_analyze_model_uses_the_config_size_module_paths_and_counts_the_mask_head(capsys):
    argv = ["--config-file", QUICK, "--tasks", "flop", "--depth", "2", *TINY, "TEST.DETECTIONS_PER_IMAGE", "20"]
    status, stdout, err = run_tool_here("analyze_model", argv, capsys)
    assert status == 0, err[-2000:]
    assert "at 128x256 (height x width)" in stdout  # INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST of the config
    assert "ROI heads on 20 detections" in stdout
    rows = {
        l.split("|")[1].strip(): l.split("|")[3].strip()
        for l in stdout.splitlines()
        if l.startswith("|") and l.count("|") >= 4
    }
    assert "m" not in rows and " m." not in stdout
    assert rows["roi_heads.mask_head"] not in ("", "0") and rows["backbone.bottom_up"] not in ("", "0")


def test_benchmark_prints_one_unit_per_figure():
    format_result = tool_module("benchmark").format_result

    text = format_result(
        {
            "task": "eval",
            "device": "cpu",
            "cpu": "some CPU",
            "precision": "float32",
            "images": 2,
            "iters": 5,
            "threads": 2,
            "median_s_per_iter": 8.0,
            "min_s": 7.7,
            "max_s": 8.6,
            "images_per_s": 0.25,
            "peak_mem_mb": 1400.0,
        }
    )
    lines = text.splitlines()
    assert "seconds per iteration: median 8.0000  (min 7.7000, max 8.6000)" in lines[1]
    assert "seconds per image:     median 4.0000  (min 3.8500, max 4.3000)" in lines[2]
    assert "images per second" in lines[3] and "peak memory (MB)" in lines[4]


def test_demo_and_evaluation_share_one_precision_policy(monkeypatch):
    from detgn.config import get_cfg
    from detgn.engine import DefaultPredictor
    from detgn.engine import precision as prec

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(TINY + ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "auto"])
    for fast in (True, False):
        monkeypatch.setattr(prec, "cpu_bf16_decision", lambda fast=fast: (fast, "patched"))
        p = DefaultPredictor(cfg).precision
        assert p == prec.resolve_inference_precision(True, "auto", "cpu")
        assert p.dtype == (torch.bfloat16 if fast else None)
