"""The evaluation contract: DefaultTrainer.test returns {dataset: {task: {metric: value}}}; EvalHook stores every
number as dataset/task/metric (and task/metric with one test set); both test sets reach metrics.json and the AP
plot; a value that is not a number is refused with its path."""

import json
import math
import os

import numpy as np
import pytest

from detgn.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from detgn.engine.hooks import flatten_results, storage_keys
from detgn.utils.plot_metrics import ap_tasks, read_metrics
from tests.util import QUICK, REPO, TINY_MODEL, tool_module


def test_flatten_and_storage_keys():
    one = {"bbox": {"AP": 1.5, "AP-a": 2, "APl": np.float64("nan")}, "segm": {"AP": 3}}
    flat = flatten_results({"val": one})
    assert (
        flat.keys() == {"val/bbox/AP", "val/bbox/AP-a", "val/bbox/APl", "val/segm/AP"} and flat["val/bbox/AP-a"] == 2.0
    )
    assert math.isnan(flat["val/bbox/APl"])
    # one test set: also the task/metric keys plots and older metrics files use
    keys = storage_keys({"val": one})
    assert keys["bbox/AP"] == keys["val/bbox/AP"] == 1.5 and "segm/AP" in keys
    two = {"a": one, "b": {"bbox": {"AP": 4}}}
    assert set(storage_keys(two)) == {"a/bbox/AP", "a/bbox/AP-a", "a/bbox/APl", "a/segm/AP", "b/bbox/AP"}
    # a trainer without datasets (the classifier): task/metric
    assert storage_keys({"classification": {"top1": 50.0}}) == {"classification/top1": 50.0}
    with pytest.raises(TypeError, match="evaluation result val/bbox/table is a str, not a number"):
        flatten_results({"val": {"bbox": {"AP": 1.0, "table": "text"}}})


def test_two_test_datasets_reach_metrics_json(tmp_path, capsys):
    root = os.path.join(REPO, "datasets", "nuclei_mini")
    register_coco_instances(
        "nuclei_val_again", {}, os.path.join(root, "annotations", "val.json"), os.path.join(root, "val")
    )
    try:
        out = tmp_path / "run"
        status = tool_module("train_net").cli(
            [
                "--config-file",
                QUICK,
                *TINY_MODEL,
                "DATASETS.TEST",
                "('nuclei_mini_val', 'nuclei_val_again')",
                "SOLVER.MAX_ITER",
                "1",
                "TEST.EVAL_PERIOD",
                "0",
                "TEST.VIS_PERIOD_IMAGES",
                "0",
                "INPUT.MIN_SIZE_TEST",
                "64",
                "INPUT.MAX_SIZE_TEST",
                "96",
                "OUTPUT_DIR",
                str(out),
            ]
        )
        assert status == 0, capsys.readouterr().err[-2000:]
        rows = [json.loads(line) for line in open(out / "metrics.json")]
        keys = {k for r in rows for k in r}
        for name in ("nuclei_mini_val", "nuclei_val_again"):
            assert {f"{name}/bbox/AP", f"{name}/segm/AP"} <= keys, sorted(keys)
        assert "bbox/AP" not in keys  # two test sets: only the dataset-prefixed keys
        series = read_metrics(str(out / "metrics.json"))
        assert ap_tasks(series) == [
            f"{n}/{t}" for n in ("nuclei_mini_val", "nuclei_val_again") for t in ("bbox", "segm")
        ]
        assert os.path.isfile(out / "ap.png")
        assert os.path.isdir(out / "inference" / "nuclei_val_again")
    finally:
        DatasetCatalog.remove("nuclei_val_again")
        MetadataCatalog.remove("nuclei_val_again")
