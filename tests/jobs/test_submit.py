"""tools/submit.py without a cluster: the sbatch script it would submit, and what it refuses before queueing.
(The job itself, through submitit's LocalExecutor, is run in test_restarts.py.)"""

import importlib
import os

import pytest

from tests.engine.util import QUICK, REPO

pytest.importorskip("submitit")


@pytest.fixture
def submit(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "tools"))
    return importlib.import_module("submit")


def test_sbatch_script_of_a_4_node_job(submit, capsys, tmp_path):
    out = tmp_path / "run"
    rc = submit.main(
        [
            "--nodes",
            "4",
            "--gpus-per-node",
            "8",
            "--partition",
            "learnfair",
            "--time",
            "3-00:00:00",
            "--account",
            "vision",
            "--qos",
            "high",
            "--constraint",
            "volta32gb",
            "--job-name",
            "gn3x",
            "--cpus-per-task",
            "10",
            "--mem",
            "0",
            "--sbatch",
            "mail-type=END",
            "--sbatch",
            "exclusive",
            "--setup",
            "module load cuda/12.4",
            "--dry-run",
            "--",
            "--config-file",
            QUICK,
            "OUTPUT_DIR",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    lines = set(text.splitlines())
    for flag in (
        "--nodes=4",
        "--ntasks-per-node=8",
        "--gpus-per-node=8",
        "--partition=learnfair",
        "--time=4320",
        "--account=vision",
        "--qos=high",
        "--constraint=volta32gb",
        "--job-name=gn3x",
        "--cpus-per-task=10",
        "--mem=0",
        "--mail-type=END",
        "--exclusive",
        "--requeue",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {flag}" in lines, flag
    assert "module load cuda/12.4" in lines
    assert f"--error={out}/submitit/%j/%j_0_log.err" in text.replace("#SBATCH ", "")
    assert "--auto-resume" in text and "srun" in text
    assert not out.exists()  # a dry run writes nothing


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--", "--config-file", QUICK, "--num-gpus", "2"], "--num-gpus is decided by the job"),
        (["--gpus-per-node", "0", "--", "--config-file", QUICK], "needs --tasks-per-node"),
        (["--gpus-per-node", "8", "--tasks-per-node", "4", "--", "--config-file", QUICK], "one process per GPU"),
        (["--time", "1:30", "--", "--config-file", QUICK], "must be longer than --signal-delay"),
        (["--time", "tomorrow", "--", "--config-file", QUICK], "is not a SLURM time"),
        (["--sbatch", "=x", "--", "--config-file", QUICK], "expected KEY=VALUE"),
        (["--", "--config-file", QUICK, "SOLVER.BASE_LRR", "1"], "SOLVER.BASE_LRR"),
        ([], "no training arguments"),
    ],
)
def test_refused_before_anything_is_queued(submit, capsys, argv, message):
    assert submit.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_time_formats(submit):
    parse_time_minutes = submit.parse_time_minutes

    assert [parse_time_minutes(t) for t in ("90", "1:30", "02:00:00", "02:00:01", "1-00", "1-02:30", "3-00:00:00")] == [
        90,
        2,
        120,
        121,
        1440,
        1590,
        4320,
    ]


def test_a_run_of_another_config_is_refused(submit, capsys, tmp_path):
    from detgn.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.SOLVER.BASE_LR = 0.5
    cfg.OUTPUT_DIR = str(tmp_path)
    (tmp_path / "config.yaml").write_text(cfg.dump())
    assert submit.main(["--dry-run", "--", "--config-file", QUICK, "OUTPUT_DIR", str(tmp_path)]) == 2
    assert "holds a run of another config" in capsys.readouterr().err
