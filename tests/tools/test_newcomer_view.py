"""What a user sees: strict-JSON metrics, honest evaluation ETA, readable plots and pictures, tools that refuse to guess."""

import json
import logging
import math
import os

import numpy as np
import pytest
import torch

from tests.util import QUICK, REPO, TINY_MODEL, run_tool, run_tool_here, tool_module

TINY = TINY_MODEL


def _strict_json(line):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


# ---------------------------------------------------------------- metrics.json and undefined metrics
def test_metrics_json_writes_null_for_nan_and_parses_strictly(tmp_path):
    from detgn.utils.events import EventStorage, JSONWriter
    from detgn.utils.plot_metrics import read_metrics

    path = str(tmp_path / "metrics.json")
    w = JSONWriter(path)
    with EventStorage(0) as storage:
        storage.put_scalars(loss_cls=0.5, smoothing_hint=False)
        storage.put_scalar("segm/APl", float("nan"), smoothing_hint=False)
        storage.put_scalar("segm/AP", 12.5, smoothing_hint=False)
        storage.put_scalar("bad", float("inf"), smoothing_hint=False)
        w.write()
    w.close()
    rows = [_strict_json(line) for line in open(path)]
    assert rows == [{"iteration": 0, "bad": None, "loss_cls": 0.5, "segm/AP": 12.5, "segm/APl": None}]
    series = read_metrics(path)  # null values are not plotted
    assert "segm/APl" not in series and series["segm/AP"] == [(0, 12.5)]


def _tiny_coco(tmp_path):
    """Ground truth with only small objects (APl undefined) and the same boxes as predictions."""
    images = [{"id": i, "file_name": f"{i}.png", "height": 64, "width": 64} for i in (1, 2)]
    anns, results = [], []
    for k, (img, x) in enumerate([(1, 4), (1, 30), (2, 10)]):
        box = [x, 5.0, 12.0, 10.0]
        anns.append({"id": k + 1, "image_id": img, "category_id": 1, "bbox": box, "area": 120.0, "iscrowd": 0})
        results.append({"image_id": img, "category_id": 1, "bbox": box, "score": 0.9})
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    res = tmp_path / "res.json"
    res.write_text(json.dumps(results))
    return gt, res


def test_undefined_metric_is_nan_in_log_and_in_evaluate_json(tmp_path, capsys):
    from detgn.evaluation.coco_evaluation import coco_stat_to_percent, format_metric

    assert math.isnan(coco_stat_to_percent(-1.0)) and coco_stat_to_percent(0.25) == 25.0
    assert (
        format_metric(float("nan")) == "nan"
        and format_metric(0.0) == "0.000"
        and format_metric(12.34567, 4) == "12.3457"
    )
    gt, res = _tiny_coco(tmp_path)
    status, out, err = run_tool_here("evaluate_json", ["--gt", str(gt), "--results", str(res)], capsys)
    assert status == 0, err
    fields = dict(zip(out.split()[1::2], out.split()[2::2]))
    assert fields["AP"] == "100.000" and fields["APs"] == "100.000"
    assert fields["APm"] == "nan" and fields["APl"] == "nan" and "-100" not in out


# ---------------------------------------------------------------- evaluation progress
class _FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_evaluation_eta_is_per_image_from_the_first_image(monkeypatch, caplog):
    """25 s per image (40 s for the first, warm-up): every progress line says ~25 s/img and the matching
    ETA, never the elapsed total (the old figure grew 25 -> 50 -> 76 ...)."""
    from detgn.evaluation import evaluator as ev

    clock = _FakeClock()
    monkeypatch.setattr(ev, "_now", clock)

    class SlowModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.calls = 0

        def forward(self, inputs):
            clock.t += 40.0 if self.calls == 0 else 25.0
            self.calls += 1
            return [{} for _ in inputs]

    loader = [[{"image_id": i}] for i in range(8)]
    with caplog.at_level(logging.INFO, logger="detgn.evaluation.evaluator"):
        ev.inference_on_dataset(SlowModel(), loader, None, log_period_s=5.0)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Inference done")]
    assert len(lines) == 8  # every image takes longer than the log period
    per = [float(l.split(". ")[1].split(" s/img")[0]) for l in lines]
    assert per[0] == pytest.approx(40.0) and all(p == pytest.approx(25.0) for p in per[1:])
    etas = [l.split("ETA=")[1] for l in lines]
    assert etas[1] == "0:02:30" and etas[-1] == "0:00:00"  # 6 images left x 25 s


def test_seconds_per_image_window():
    from detgn.evaluation.evaluator import seconds_per_image

    assert seconds_per_image(0.0, []) == 0.0
    assert seconds_per_image(0.0, [30.0]) == 30.0
    assert seconds_per_image(0.0, [30.0, 32.0, 34.0]) == pytest.approx(2.0)
    finished = [100.0 + i for i in range(10)] + [110.0 + 10 * i for i in range(1, 61)]  # slows from 1 to 10 s/img
    assert seconds_per_image(0.0, finished, window=50) == pytest.approx(10.0)


# ---------------------------------------------------------------- plots
def _record_figures(monkeypatch):
    from detgn.utils import plot_metrics as pm

    figs = {}
    real = pm._save

    def save(fig, out):
        ax = fig.axes[0]
        figs[os.path.basename(out)] = {
            "title": ax.get_title(),
            "ylabel": ax.get_ylabel(),
            "yscale": ax.get_yscale(),
            "bars": len(ax.patches),
            "lines": len(ax.lines),
        }
        real(fig, out)

    monkeypatch.setattr(pm, "_save", save)
    return figs


def test_plots_label_axes_smooth_losses_and_explain_a_single_evaluation(tmp_path, monkeypatch):
    from detgn.utils.plot_metrics import plot_metrics

    figs = _record_figures(monkeypatch)
    rows = [
        {"iteration": i, "loss_cls": 2.0 * 0.9**i, "loss_mask": 0.7, "total_loss": 2.7, "lr": 0.01} for i in range(60)
    ]
    rows.append(
        {
            "iteration": 59,
            "segm/AP": 31.0,
            "segm/AP50": 60.0,
            "segm/AP75": 30.0,
            "segm/APl": None,
            "bbox/AP": 29.0,
            "bbox/AP50": 58.0,
            "bbox/AP75": 28.0,
        }
    )
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    written = plot_metrics(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["ap.png", "losses.png", "lr.png"]
    assert all(os.path.getsize(p) > 5000 for p in written)
    losses = figs["losses.png"]
    assert losses["lines"] == 6  # raw + running median per loss term
    assert "loss" in losses["ylabel"] and "running median" in losses["title"]
    assert losses["yscale"] == "log"  # loss_cls falls from 2.0 to 0.004: more than two decades
    assert figs["lr.png"]["ylabel"] == "learning rate"
    ap = figs["ap.png"]
    assert ap["ylabel"] == "AP (%)" and "one evaluation" in ap["title"] and ap["bars"] == 6  # 2 tasks x AP/AP50/AP75
    plot_metrics(str(tmp_path), log_scale=False)
    assert figs["losses.png"]["yscale"] == "linear"


def test_ap_plot_with_several_evaluations_is_a_curve(tmp_path, monkeypatch):
    from detgn.utils.plot_metrics import plot_metrics, running_median

    figs = _record_figures(monkeypatch)
    rows = [{"iteration": i, "segm/AP": 10.0 + i, "segm/AP50": 20.0 + i, "segm/AP75": 5.0 + i} for i in (99, 199, 299)]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    plot_metrics(str(tmp_path))
    assert figs["ap.png"]["lines"] == 3 and figs["ap.png"]["bars"] == 0 and "3 evaluations" in figs["ap.png"]["title"]
    assert running_median([5, 1, 3, 100, 2], 3).tolist() == [5, 3, 3, 3, 3]


def test_plot_metrics_cli_options(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "loss_cls": 1.0}) + "\n")
    status, out, err = run_tool_here("plot_metrics", [str(tmp_path), "--log-scale", "on", "--window", "5"], capsys)
    assert status == 0 and "losses.png" in out, err
    status, _, err = run_tool_here("plot_metrics", [str(tmp_path), "--window", "0"], capsys)
    assert status == 2 and "--window" in err


# ---------------------------------------------------------------- pictures
def _dense_instances(n=150, hw=(256, 256), seed=0):
    from detgn.structures import Boxes, Instances

    rng = np.random.RandomState(seed)
    xy = rng.uniform(0, 240, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(8, 16, (n, 2))], axis=1).clip(0, 255)
    inst = Instances(hw)
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(rng.uniform(0.3, 1.0, n), dtype=torch.float32)
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    masks = torch.zeros(n, *hw, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
        masks[i, y0:y1, x0:x1] = True
    inst.pred_masks = masks
    return inst


def test_dense_labels_do_not_overlap_and_are_counted():
    from detgn.utils.visualizer import draw_instances

    inst = _dense_instances()
    img = np.full((256, 256, 3), 90, np.uint8)
    r = draw_instances(
        img,
        inst.pred_boxes.tensor.numpy(),
        inst.pred_masks.numpy(),
        inst.pred_classes.tolist(),
        inst.scores.tolist(),
        ["nucleus"],
        score_low=0.3,
        return_result=True,
    )
    rects = r.label_rects
    assert r.num_instances == 150 and 10 < len(rects) < 150  # many labelled, the crowded rest left out
    for i, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= 256 and a[3] <= 256
        for b in rects[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # the highest-scoring instance always gets its label
    best = int(torch.argmax(inst.scores))
    x0, y0 = inst.pred_boxes.tensor[best, :2].tolist()
    assert any(abs(rc[0] - max(int(x0), 0)) <= 1 for rc in rects)


def test_prediction_picture_has_input_gt_prediction_and_a_legend(tmp_path):
    from detgn.data.detection_utils import record_ground_truth
    from detgn.structures import BoxMode
    from detgn.utils.prediction_pictures import draw_prediction, prediction_panels

    inst = _dense_instances(n=40)
    img = np.full((256, 256, 3), 90, np.uint8)
    record = {
        "annotations": [
            {
                "bbox": [10, 10, 20, 20],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": 0,
                "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]],
                "iscrowd": 0,
            }
        ]
    }
    pic = prediction_panels(img, inst, record_ground_truth(record, (256, 256)), ["nucleus"], threshold=0.5)
    assert pic.shape == (20 + 256 + 22, 3 * 256, 3)  # title bars, three panels, legend strip
    assert record_ground_truth({}, (256, 256)) is None
    no_gt = prediction_panels(img, inst, None, ["nucleus"], threshold=0.5)
    assert no_gt.shape[1] == 2 * 256
    single = draw_prediction(img, inst, ["nucleus"], threshold=0.9)
    assert single.shape == (256 + 22, 256, 3)
    # the threshold decides what is drawn: nothing above 1.0 leaves the image as it was
    assert np.array_equal(draw_prediction(img, inst, ["nucleus"], threshold=1.01, legend=False), img)


# ---------------------------------------------------------------- tools that refuse to guess
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


# ---------------------------------------------------------------- quick start overrides
def test_quickstart_demo_passes_overrides_and_names_the_output(monkeypatch, capsys):
    monkeypatch.syspath_prepend(REPO)
    import quickstart

    cmd, out = quickstart.demo_command(["SOLVER.MAX_ITER", "10", "OUTPUT_DIR", "output/short"])
    assert cmd[-4:] == ["SOLVER.MAX_ITER", "10", "OUTPUT_DIR", "output/short"] and out == "output/short"
    assert cmd.index("--config-file") < cmd.index("SOLVER.MAX_ITER")
    ran, installed = [], []
    monkeypatch.setattr(quickstart, "install", installed.append)
    monkeypatch.setattr(quickstart, "_run", lambda c, **kw: ran.append(c) or 0)
    assert quickstart.main(["demo", "SOLVER.MAX_ITER", "10"]) == 0
    assert ran[0][-2:] == ["SOLVER.MAX_ITER", "10"]
    assert installed == ["demo"]  # the demo's extra only; `test` installs dev
    assert "done in" in capsys.readouterr().out
    assert quickstart.main(["test"]) == 0 and installed == ["demo", "dev"] and ran[1][1:4] == ["-m", "pytest", "-q"]
    capsys.readouterr()
    assert quickstart.main(["demo", "SOLVER.MAX_ITER"]) == 2  # odd number: refused before installing anything
    assert "KEY VALUE pairs" in capsys.readouterr().err
    assert quickstart.main(["test", "x"]) == 2
    cmd, _ = quickstart.demo_command(["SOLVER.MAX_ITER", "10", "--overwrite"])  # a second demo into the same folder
    assert "--overwrite" in cmd and cmd[-2:] == ["SOLVER.MAX_ITER", "10"]


# ---------------------------------------------------------------- console
@pytest.mark.slow  # two short training subprocesses
def test_console_starts_with_a_short_header_and_files_hold_the_rest(quick_run, tmp_path):
    out, r = quick_run  # the shared finished run (tests/conftest.py)
    lines = r.stdout.splitlines() + r.stderr.splitlines()
    log = open(out / "log.txt").read().splitlines()
    first_iter = next(i for i, l in enumerate(log) if "iter: 0" in l)
    assert first_iter <= 15, "\n".join(log[:first_iter])
    head = "\n".join(log[:first_iter])
    for expected in (
        "Config " + QUICK,
        "Device: cpu",
        "Data: train nuclei_mini_train: ",
        "test nuclei_mini_val: 12 images",
        "M parameters",
        "model.txt",
        "Schedule: 4 iterations x 2 images",
        "Precision for training",
    ):
        assert expected in head, expected
    assert "Running with config" not in "\n".join(lines) and "ResNet(" not in head
    assert "BasicBlock" in open(out / "model.txt").read() or "Bottleneck" in open(out / "model.txt").read()
    assert "SOLVER:" in open(out / "config.yaml").read()
    args = ["--config-file", QUICK, *TINY, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()"]
    r = run_tool("train_net.py", "--verbose", *args, "OUTPUT_DIR", str(tmp_path / "verbose"))
    assert r.returncode == 0, r.stderr[-2000:]
    verbose_log = open(tmp_path / "verbose" / "log.txt").read()
    assert "Running with config" in verbose_log and "roi_heads" in verbose_log
