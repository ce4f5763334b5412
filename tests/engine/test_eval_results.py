"""Evaluation results reach metrics.json whatever the number of test datasets."""

import json
import os

from detgn.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from detgn.engine.hooks import flatten_results
from tests.util import QUICK, REPO, TINY_MODEL, tool_module


def test_flatten_one_and_several_datasets():
    one = {"bbox": {"AP": 1.5, "AP-a": 2, "table": "text"}, "segm": {"AP": 3}}
    assert flatten_results(one) == {"bbox/AP": 1.5, "bbox/AP-a": 2.0, "segm/AP": 3.0}
    two = {"a": one, "b": {"bbox": {"AP": 4}}}
    assert flatten_results(two) == {"a/bbox/AP": 1.5, "a/bbox/AP-a": 2.0, "a/segm/AP": 3.0, "b/bbox/AP": 4.0}


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
        assert os.path.isdir(out / "inference" / "nuclei_val_again")
    finally:
        DatasetCatalog.remove("nuclei_val_again")
        MetadataCatalog.remove("nuclei_val_again")
