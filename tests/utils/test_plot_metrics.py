"""utils/plot_metrics.py and tools/plot_metrics.py: labelled axes, smoothed losses, AP as bars or curves."""

import json
import os


from tests.util import TINY_MODEL, run_tool_here

TINY = TINY_MODEL


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
