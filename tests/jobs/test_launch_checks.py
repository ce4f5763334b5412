"""Launches that cannot describe a job are refused in one line before anything starts or waits: a machine rank
out of range, no processes, a malformed SLURM variable, a partial torchrun layout, an unusable --dist-url; a
port in use is named as such at once."""

import os
import socket
import time
from datetime import timedelta

import pytest

from detgn.jobs.launch import JoinError, WorkerStoppedError, launch
from detgn.jobs.launch_checks import LaunchError, check_rank_environment
from detgn.jobs.slurm import SlurmEnvError, expand_hostlist, slurm_environment
from tests.util import QUICK, tool_module

LAYOUT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env():
    """os.environ as it was after the test, whatever apply_slurm_environment wrote into it."""
    saved = dict(os.environ)
    for k in list(os.environ):
        if k in LAYOUT or k.startswith("SLURM_") or k.startswith("TORCHELASTIC"):
            del os.environ[k]
    yield os.environ
    os.environ.clear()
    os.environ.update(saved)


def _cli(argv, capsys, tmp_path):
    started = time.monotonic()
    status = tool_module("train_net").cli(["--config-file", QUICK, *argv, "OUTPUT_DIR", str(tmp_path / "run")])
    err = capsys.readouterr().err
    return status, err, time.monotonic() - started


@pytest.mark.parametrize(
    "argv,words",
    [
        (
            ["--num-machines", "2", "--machine-rank", "2", "--dist-url", "tcp://127.0.0.1:29511"],
            "machine ranks are 0..1",
        ),
        (["--machine-rank", "-1"], "machine ranks are 0..0"),
        (["--num-gpus", "0"], "--num-gpus 0"),
        (["--num-machines", "0"], "--num-machines 0"),
        (["--num-machines", "2", "--machine-rank", "1"], "needs --dist-url tcp://"),
        (["--num-gpus", "2", "--dist-url", "ftp://127.0.0.1:29500"], "unsupported scheme 'ftp'"),
        (["--num-gpus", "2", "--dist-url", "tcp://127.0.0.1:99999"], "port in 1..65535"),
        (["--num-gpus", "2", "--dist-url", "127.0.0.1:29500"], "use tcp://"),
    ],
)
def test_impossible_layout_refused_before_anything_starts(clean_env, capsys, tmp_path, argv, words):
    status, err, took = _cli(argv, capsys, tmp_path)
    assert status == 2 and words in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing claimed, nothing waited for


SRUN = {"SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": "77"}


@pytest.mark.parametrize(
    "nodelist,words",
    [
        ("gpu[003-", "not closed"),
        ("gpu[a-b]", "'a-b' is not a number"),
        ("gpu[9-3]", "runs backwards"),
        ("gpu]1[", "unbalanced"),
        ("gpu[[1-2]]", "nested"),
    ],
)
def test_malformed_hostlist_is_one_line(nodelist, words):
    with pytest.raises(SlurmEnvError, match="MASTER_ADDR") as e:
        slurm_environment(dict(SRUN, SLURM_STEP_NODELIST=nodelist))
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(SlurmEnvError):
        expand_hostlist(nodelist)


def test_malformed_hostlist_not_needed_for_one_task_or_a_given_master():
    one = slurm_environment(
        dict(SRUN, SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_STEP_NUM_TASKS="1", SLURM_STEP_NODELIST="gpu[003-")
    )
    assert one["MASTER_ADDR"] == "127.0.0.1" and one["WORLD_SIZE"] == "1"
    given = slurm_environment(dict(SRUN, SLURM_STEP_NODELIST="gpu[003-", MASTER_ADDR="head"))
    assert given["MASTER_ADDR"] == "head"


@pytest.mark.parametrize(
    "tasks,ntasks,words",
    [("", "", "are empty"), ("", "4x", "'4x' is not a number"), ("0", "", "'0' is not a number of tasks")],
)
def test_task_count_unreadable(tasks, ntasks, words):
    with pytest.raises(SlurmEnvError, match=words):
        slurm_environment(dict(SRUN, SLURM_STEP_NUM_TASKS=tasks, SLURM_NTASKS=ntasks, SLURM_STEP_NODELIST="gpu1"))


def test_empty_task_count_falls_back_to_ntasks():
    got = slurm_environment(dict(SRUN, SLURM_STEP_NUM_TASKS="", SLURM_NTASKS="2", SLURM_STEP_NODELIST="gpu[1-2]"))
    assert got["WORLD_SIZE"] == "2" and got["MASTER_ADDR"] == "gpu1"


def test_malformed_slurm_through_train_net(clean_env, capsys, tmp_path):
    clean_env.update(dict(SRUN, SLURM_STEP_NODELIST="gpu[003-"))
    status, err, took = _cli([], capsys, tmp_path)
    assert status == 2 and "SLURM host list 'gpu[003-' is malformed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "env,words",
    [
        ({"RANK": "1"}, "RANK=1 set but WORLD_SIZE, LOCAL_RANK, MASTER_ADDR not"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 set but RANK, LOCAL_RANK, MASTER_ADDR not"),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h"}, "a rank must be in 0..WORLD_SIZE-1"),
        ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h"}, "RANK='x' is not a number"),
    ],
)
def test_partial_or_impossible_rank_environment(env, words):
    with pytest.raises(LaunchError, match=words):
        check_rank_environment(env)


def test_rank_without_world_size_through_train_net(clean_env, capsys, tmp_path):
    clean_env["RANK"] = "1"
    status, err, took = _cli([], capsys, tmp_path)
    assert status == 2 and "RANK=1 set but WORLD_SIZE" in err and len(err.strip().splitlines()) == 1


def test_consistent_environment_is_accepted():
    assert check_rank_environment({}) is None
    assert check_rank_environment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h"}) == {
        "rank": 3,
        "world_size": 4,
        "local_rank": 1,
    }


def _noop():
    return None


def test_port_in_use_is_named_at_once(clean_env, capfd):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(WorkerStoppedError):
            launch(_noop, 2, dist_url=f"tcp://127.0.0.1:{port}", timeout=timedelta(seconds=120), use_cuda=False)
    finally:
        held.close()
    err = capfd.readouterr().err
    assert "the port is already in use on this machine" in err and "did not start" not in err
    assert time.monotonic() - started < 100  # it did not wait the timeout


def test_early_join_failure_says_what_happened(clean_env):
    """A join that fails long before the timeout is not blamed on machines that did not start."""
    from detgn.jobs.launch import _join_error

    e = _join_error(
        RuntimeError("connection refused\nmore"), "rank 1 of 2", "tcp://h:1", time.monotonic(), timedelta(seconds=1800)
    )
    assert (
        isinstance(e, JoinError) and "failed after 0 s (connection refused)" in str(e) and "did not start" not in str(e)
    )
