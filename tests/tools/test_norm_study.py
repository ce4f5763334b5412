"""tools/norm_study.py --quick: every cell trains and evaluates, the table and the plot are written, and a
finished cell is not rerun while an interrupted one resumes (machinery only: --quick measures nothing)."""

import json
import os

import pytest

from tests.util import run_tool_here, tool_module


def test_cell_overrides_scale_batch_iterations_and_lr():
    cell_overrides, cells = tool_module("norm_study").cell_overrides, tool_module("norm_study").cells

    grid = cells(["BN", "GN"], [1, 2, 4], syncbn=True)
    assert [(c["norm"], c["workers"], c["ims"]) for c in grid][-3:] == [
        ("SyncBN", 2, 1),
        ("SyncBN", 2, 2),
        ("SyncBN", 2, 4),
    ]
    opts = dict(zip(*[iter(cell_overrides(grid[-1], 600, 0.01, "/x", quick=False, device="cpu"))] * 2))
    assert opts["SOLVER.IMS_PER_BATCH"] == "8" and opts["SOLVER.MAX_ITER"] == "75" and opts["SOLVER.BASE_LR"] == "0.08"
    assert (
        opts["SOLVER.STEPS"] == "(62,)"
        and opts["MODEL.RESNETS.NORM"] == opts["MODEL.ROI_MASK_HEAD.NORM"] == "NaiveSyncBN"
    )
    assert (
        dict(zip(*[iter(cell_overrides(grid[-1], 600, 0.01, "/x", quick=False, device="cuda"))] * 2))["MODEL.FPN.NORM"]
        == "SyncBN"
    )
    gn1 = dict(zip(*[iter(cell_overrides(grid[3], 600, 0.01, "/x", quick=False, device="cpu"))] * 2))
    assert (
        gn1["SOLVER.MAX_ITER"] == "600" and gn1["SOLVER.BASE_LR"] == "0.01" and gn1["MODEL.ROI_BOX_HEAD.NORM"] == "GN"
    )
    assert gn1["SOLVER.IMS_PER_DEVICE"] == "0"
    # --accumulate: the N-image steps again, as N micro-batches of 1 image; same iterations and LR as N per batch
    acc = cells(["BN", "GN"], [1, 2, 4], syncbn=False, accumulate=True)[6:]
    assert [tool_module("norm_study").cell_name(c) for c in acc] == [
        "BN_1x2_micro1",
        "BN_1x4_micro1",
        "GN_1x2_micro1",
        "GN_1x4_micro1",
    ]
    gn4 = dict(zip(*[iter(cell_overrides(acc[-1], 600, 0.01, "/x", quick=False, device="cpu"))] * 2))
    assert (gn4["SOLVER.IMS_PER_BATCH"], gn4["SOLVER.IMS_PER_DEVICE"], gn4["SOLVER.MAX_ITER"]) == ("4", "1", "150")
    assert gn4["SOLVER.BASE_LR"] == "0.04"


@pytest.mark.slow  # a few tiny training subprocesses
def test_quick_study_writes_every_cell_table_and_plot_and_resumes(tmp_path, capsys, monkeypatch):
    """The study itself runs in this process (it only orchestrates); each cell is a real train_net subprocess."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    out = tmp_path / "study"
    argv = ["--quick", "--threads", "2", "--output", str(out), "--ims", "1"]
    status, _, err = run_tool_here("norm_study", argv, capsys)
    assert status == 0, err[-3000:]
    results = json.load(open(out / "results.json"))["cells"]
    assert sorted(c["name"] for c in results) == ["BN_1x1", "GN_1x1"]
    assert all(c["segm_AP"] is not None and c["bbox_AP"] is not None for c in results)
    table = open(out / "norm_study.md").read()
    assert "| BN |" in table and "| GN |" in table and "1 image per worker and step" in table
    assert (out / "norm_study.png").stat().st_size > 10000
    # resumable: a finished cell is not rerun; a cell without result.json continues from its checkpoint
    os.remove(out / "cells" / "GN_1x1" / "result.json")
    status, stdout, err = run_tool_here("norm_study", argv, capsys)
    assert status == 0, err[-3000:]
    assert stdout.count("done before; not rerun") == 1 and "[GN_1x1] resuming" in stdout
    assert len(json.load(open(out / "results.json"))["cells"]) == 2


def test_table_and_plot_have_a_row_and_a_line_per_norm(tmp_path):
    """The SyncBN row (2 processes) next to the per-worker norms; an undefined AP is shown as n/a."""
    write_plot, write_table = tool_module("norm_study").write_plot, tool_module("norm_study").write_table

    results = [
        dict(norm=n, workers=w, ims=i, segm_AP=float(10 * i + k), bbox_AP=float("nan") if (n, i) == ("BN", 2) else 1.0)
        for k, (n, w) in enumerate([("BN", 1), ("GN", 1), ("SyncBN", 2)])
        for i in (1, 2)
    ] + [dict(norm="GN", workers=1, ims=2, per_device=1, segm_AP=19.0, bbox_AP=2.0)]
    write_table(results, str(tmp_path / "t.md"), "# header")
    table = open(tmp_path / "t.md").read().splitlines()
    assert "| BN | 10.0 / 1.0 | 20.0 / n/a |" in table and "| SyncBN (2 processes) | 12.0 / 1.0 | 22.0 / 1.0 |" in table
    assert "| GN, micro-batches of 1 | - | 19.0 / 2.0 |" in table
    write_plot(results, str(tmp_path / "p.png"), "title")
    assert (tmp_path / "p.png").stat().st_size > 10000
