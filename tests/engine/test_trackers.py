"""detgn/engine/trackers.py: a training run logged to W&B (offline) and MLflow (a file store), both local: the
config once, every scalar at its iteration, the AP table and the plots; a missing package refused when read."""

import glob
import json
import os
import struct
from types import SimpleNamespace

import pytest

from detgn.config import get_cfg
from detgn.engine import DefaultTrainer, seed_all_rng
from detgn.engine.trackers import ap_table
from tests.engine.util import QUICK, SMALL_MODEL

wandb = pytest.importorskip("wandb")
mlflow = pytest.importorskip("mlflow")


def _wandb_records(path):
    """The protobuf records of an offline W&B run file (LevelDB-log framing: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = open(path, "rb").read()
    assert raw[:4] == b":W&B"
    pos, block, pieces, out = 7, 32768, b"", []
    while pos + 7 <= len(raw):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        data, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 0 and length == 0:
            break
        pieces = data if kind in (1, 2) else pieces + data
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pieces)
            out.append(record)
    return out


class _ScriptedTrainer(DefaultTrainer):
    @classmethod
    def test(cls, cfg, model, evaluators=None, task_suffix=""):
        return {"nuclei_mini_val": {"segm": {"AP": 12.5, "AP50": 40.0}, "bbox": {"AP": 10.0, "AP50": 30.0}}}


def test_a_run_reaches_wandb_offline_and_an_mlflow_file_store(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(
        SMALL_MODEL
        + ["OUTPUT_DIR", str(tmp_path / "run"), "SOLVER.MAX_ITER", "2", "LOG_PERIOD", "1", "SOLVER.STEPS", "(10,)"]
        + ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "160", "DATALOADER.NUM_WORKERS", "0"]
        + ["WANDB.ENABLED", "True", "WANDB.MODE", "offline", "MLFLOW.ENABLED", "True", "SOLVER.BASE_LR", "0.0025"]
    )
    seed_all_rng(0)
    trainer = _ScriptedTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.json")]
    losses = {r["iteration"]: r["total_loss"] for r in rows if "total_loss" in r}
    assert sorted(losses) == [0, 1]

    # W&B, offline: the config, the scalars at their iterations, the AP table and the plots
    (path,) = glob.glob(str(tmp_path / "run" / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = _wandb_records(path)
    config = {i.key: i.value_json for r in records if r.WhichOneof("record_type") == "run" for i in r.run.config.update}
    assert json.loads(config["SOLVER.BASE_LR"]) == 0.0025
    history = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    logged = {h["_step"]: h for h in history}
    assert {s: logged[s]["total_loss"] for s in (0, 1)} == pytest.approx(losses)
    # the final evaluation is the row of iteration MAX_ITER (as in metrics.json), with the AP table and the plots
    assert logged[2]["nuclei_mini_val/segm/AP"] == 12.5 and logged[2]["segm/AP"] == 12.5
    assert logged[2]["ap_table/nrows"] == 2 and logged[2]["plots/losses/_type"] == "image-file"

    # MLflow, file store in OUTPUT_DIR/mlruns
    from mlflow.tracking import MlflowClient

    client = MlflowClient("file:" + str(tmp_path / "run" / "mlruns"))
    (run,) = client.search_runs([client.get_experiment_by_name("detgn").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params["SOLVER.BASE_LR"] == "0.0025" and run.data.params["MODEL.RESNETS.NORM"] == "GN"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "total_loss")}
    assert history == pytest.approx(losses)
    assert run.data.metrics["nuclei_mini_val/bbox/AP50"] == 30.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "ap_table.json", "plots"} <= artifacts
    table = json.load(open(client.download_artifacts(run.info.run_id, "ap_table.json", str(tmp_path))))
    assert table == [
        {"dataset": "nuclei_mini_val", "task": "bbox", "AP": 10.0, "AP50": 30.0},
        {"dataset": "nuclei_mini_val", "task": "segm", "AP": 12.5, "AP50": 40.0},
    ]
    assert os.path.isfile(tmp_path / "run" / "losses.png")


def test_the_ap_table_reads_one_or_several_test_sets():
    one = {"segm/AP": 1.0, "val/segm/AP": 1.0, "val/segm/AP50": 2.0, "total_loss": 3.0, "val/segm/AR": 4.0}
    assert ap_table(one) == [{"dataset": "val", "task": "segm", "AP": 1.0, "AP50": 2.0}]
    assert ap_table({"bbox/AP": 5.0}) == [{"dataset": "", "task": "bbox", "AP": 5.0}]


@pytest.mark.parametrize(
    "opts, message",
    [
        (
            ["WANDB.ENABLED", "True"],
            r"WANDB.ENABLED = True: must be False here: the wandb package is missing "
            r"\(pip install 'detgn\[wandb\]'\)",
        ),
        (["MLFLOW.ENABLED", "True"], r"the mlflow package is missing \(pip install 'detgn\[mlflow\]'\)"),
    ],
)
def test_a_tracker_without_its_package_is_refused_when_read(opts, message, monkeypatch):
    import importlib.util

    from detgn.jobs import ConfigError, setup_cfg

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("wandb", "mlflow") else real(name, *a)
    )
    with pytest.raises(ConfigError, match=message):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=opts))


def test_tracker_settings_need_their_tracker():
    from detgn.jobs import ConfigError, setup_cfg

    with pytest.raises(ConfigError, match="WANDB.PROJECT = 'mine': must be its default 'detgn' unless WANDB.ENABLED"):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=["WANDB.PROJECT", "mine"]))
    with pytest.raises(ConfigError, match="WANDB.MODE = 'cloud': must be one of 'online', 'offline'"):
        setup_cfg(SimpleNamespace(config_file=QUICK, opts=["WANDB.ENABLED", "True", "WANDB.MODE", "cloud"]))
