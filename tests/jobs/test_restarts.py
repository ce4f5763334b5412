"""Restarts that resume exactly, with 2 processes on 127.0.0.1 standing for 2 machines (gloo, CPU):

- srun tasks preempted (SIGUSR1 on one rank) save after the same iteration; the requeued job
  (SLURM_RESTART_COUNT=1, the same command) finishes bit-identical to an uninterrupted run;
- torchrun with 2 nodes (c10d rendezvous) and --max-restarts 1: a worker killed (SIGKILL) mid-run, the
  restarted group resumes from the last periodic checkpoint, bit-identical again;
- a process that dies on one machine stops the other machine's process with a message, not a hang;
- a checkpoint of 2 processes resumed by 1 continues the same image stream and LR schedule.

Faults are injected at fixed iterations (tests/engine/fault_train_net.py), never by timing.
"""

import json
import shutil
import os
import subprocess
import sys
import time

import pytest
import torch

from detgn.jobs.launch import find_free_port

from tests.engine.util import QUICK, REPO, SMALL_MODEL

FAULT_NET = os.path.join(REPO, "tests", "engine", "fault_train_net.py")
# 4 iterations of 2 images, a checkpoint after iterations 1 and 3 (0-based), no evaluation; without aspect-ratio
# grouping (each rank groups its own images), so that the images of an iteration do not depend on the number of ranks
COMMON = [
    "--config-file",
    QUICK,
    "SOLVER.MAX_ITER",
    "4",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "DATASETS.TEST",
    "()",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "DATALOADER.NUM_WORKERS",
    "0",
    "DATALOADER.ASPECT_RATIO_GROUPING",
    "False",
] + SMALL_MODEL
ENV = {"OMP_NUM_THREADS": "1"}


def _env(extra=None):
    e = dict(os.environ, **ENV)
    e.update(extra or {})
    return e


def _rows(path):
    keep = lambda r: {k: v for k, v in r.items() if "loss" in k or k in ("lr", "iteration")}
    return [keep(json.loads(line)) for line in open(path)]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: one launch of 2 processes, 4 iterations without a stop; the images and augmentations of each
    iteration recorded in ../stream (tests/engine/fault_train_net.py is train_net with that recording)."""
    out = tmp_path_factory.mktemp("restarts") / "uninterrupted"
    r = subprocess.run(
        [sys.executable, FAULT_NET, "--num-gpus", "2"] + COMMON + ["OUTPUT_DIR", str(out)],
        cwd=REPO,
        env=_env({"DETGN_TEST_RECORD": str(out.parent / "stream")}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _assert_same_run(ref, out):
    a = torch.load(ref / "model_final.pth", weights_only=True)
    b = torch.load(out / "model_final.pth", weights_only=True)
    assert a["iteration"] == b["iteration"] == 3
    bad = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not bad, f"{len(bad)} tensors differ from the uninterrupted run, e.g. {bad[:3]}"
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    assert _rows(ref / "metrics.json") == _rows(out / "metrics.json")  # the same history, no iteration twice


def _srun_tasks(out, port, extra_env, n=2):
    return [
        subprocess.Popen(
            [sys.executable, FAULT_NET] + COMMON + ["OUTPUT_DIR", str(out)],
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(
                {
                    "SLURM_PROCID": str(r),
                    "SLURM_LOCALID": str(r),
                    "SLURM_STEP_NUM_TASKS": str(n),
                    "SLURM_NTASKS": str(n),
                    "SLURM_JOB_NODELIST": "127.0.0.1",
                    "SLURM_JOB_ID": "77",
                    "MASTER_PORT": str(port),
                    **extra_env,
                }
            ),
        )
        for r in range(n)
    ]


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_srun_job_preempted_then_requeued_equals_uninterrupted(uninterrupted, tmp_path):
    out = tmp_path / "srun"
    # SLURM signals every task, not necessarily at once: rank 0 gets SIGUSR1 after iteration 2, rank 1 never
    tasks = _srun_tasks(out, find_free_port(), {"DETGN_TEST_FAULT": "0:2:SIGUSR1"})
    outs = [t.communicate(timeout=600) for t in tasks]
    assert [t.returncode for t in tasks] == [138, 138], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "stopped by SIGUSR1 after iteration 2" in outs[0][1] and "Traceback" not in outs[0][1] + outs[1][1]
    assert (out / "last_checkpoint").read_text().strip() == "model_0000002.pth" and not (
        out / "model_final.pth"
    ).exists()
    # SLURM requeues the job: the same command, SLURM_RESTART_COUNT=1, no --resume
    tasks = _srun_tasks(out, find_free_port(), {"SLURM_RESTART_COUNT": "1"})
    outs = [t.communicate(timeout=600) for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    assert "SLURM requeued this job (SLURM_RESTART_COUNT=1)" in outs[0][1]
    assert "Resuming from iteration 3" in open(out / "log.txt").read()
    _assert_same_run(uninterrupted, out)


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_torchrun_two_nodes_elastic_restart_equals_uninterrupted(uninterrupted, tmp_path):
    out = tmp_path / "torchrun"
    port = find_free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--node-rank",
                str(r),
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--max-restarts",
                "1",
                "--monitor-interval",
                "0.5",
                FAULT_NET,
                "--dist-timeout",
                "120",
            ]
            + COMMON
            + ["OUTPUT_DIR", str(out)],
            cwd=REPO,
            text=True,
            # a store per round: the shared one lets a restart read stale addresses (pytorch/pytorch#135712)
            env=_env({"DETGN_TEST_FAULT": "1:2:SIGKILL", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in (0, 1)
    ]
    outs = [n.communicate(timeout=600) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]
    log = open(out / "log.txt").read()
    assert log.count("Rank 0 of 2") == 2, "the group was not restarted once"
    assert "Resuming from iteration 2" in log  # from model_0000001.pth, the last periodic checkpoint
    _assert_same_run(uninterrupted, out)


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_a_process_dying_on_one_machine_stops_the_other(tmp_path):
    port = find_free_port()
    machines = [
        subprocess.Popen(
            [
                sys.executable,
                FAULT_NET,
                "--num-machines",
                "2",
                "--machine-rank",
                str(r),
                "--dist-url",
                f"tcp://127.0.0.1:{port}",
                "--dist-timeout",
                "60",
            ]
            + COMMON
            + ["OUTPUT_DIR", str(tmp_path / f"m{r}")],
            cwd=REPO,
            env=_env({"DETGN_TEST_FAULT": "1:0:SIGKILL"}),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for r in (0, 1)
    ]
    t0 = time.time()
    outs = [m.communicate(timeout=600) for m in machines]
    assert [m.returncode for m in machines] == [4, 1], outs[0][1][-3000:] + outs[1][1][-3000:]
    assert "error: process 1 of 2 was killed by SIGKILL" in outs[1][1] and "Traceback" not in outs[1][1]
    err = outs[0][1]
    assert "error: rank 0 lost contact with the other processes: rank 1 of 2 stopped or became unreachable" in err, err[
        -3000:
    ]
    assert "Traceback" not in err
    assert time.time() - t0 < 300  # not the 60 s collective timeout of --dist-timeout, and no hang


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_submitit_job_requeued_at_its_time_limit_equals_uninterrupted(uninterrupted, tmp_path):
    """tools/submit.py with submitit's LocalExecutor (the SLURM code path without a cluster): the time-limit signal
    (USR2) on rank 0 -> every rank checkpoints -> submitit's checkpoint()/requeue -> the requeued tasks resume."""
    pytest.importorskip("submitit")
    out = tmp_path / "submitit_run"
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "submit.py"),
            "--executor",
            "local",
            "--gpus-per-node",
            "0",
            "--tasks-per-node",
            "2",
            "--time",
            "60",
            "--master-port",
            str(find_free_port()),
            "--tool",
            FAULT_NET,
            "--wait",
            "--",
        ]
        + COMMON
        + ["OUTPUT_DIR", str(out)],
        cwd=REPO,
        env=_env({"DETGN_TEST_FAULT": "0:2:SIGUSR2"}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Submitted job" in r.stdout and "finished" in r.stdout
    log = open(out / "log.txt").read()
    assert "Training stopped by SIGUSR2 after iteration 2" in log and "Resuming from iteration 3" in log
    _assert_same_run(uninterrupted, out)


def _stream(folder):
    """{iteration: sorted (image id, image checksum) over every rank} from DETGN_TEST_RECORD files."""
    out = {}
    for name in os.listdir(folder):
        for line in open(os.path.join(folder, name)):
            row = json.loads(line)
            out.setdefault(row["iteration"], []).extend(tuple(x) for x in row["items"])
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_a_run_of_2_processes_resumed_on_1_continues_its_sample_stream_and_schedule(uninterrupted, tmp_path):
    """The 2-process run's checkpoint after iteration 1 resumed by 1 process x 2 images: iterations 2-3 see the same
    images with the same augmentations, and the same LR, as the uninterrupted 2-process run."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(uninterrupted / "model_0000001.pth", out)
    (out / "last_checkpoint").write_text("model_0000001.pth")
    shutil.copy(uninterrupted / "metrics.json", out)  # the resumed run drops its rows from iteration 2 on
    r = subprocess.run(
        [sys.executable, FAULT_NET, "--resume"] + COMMON + ["OUTPUT_DIR", str(out)],
        cwd=REPO,
        env=_env({"DETGN_TEST_RECORD": str(tmp_path / "stream")}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Resuming 1 processes from a checkpoint of 2" in open(out / "log.txt").read()
    ref, one = _stream(uninterrupted.parent / "stream"), _stream(tmp_path / "stream")
    assert sorted(one) == [2, 3] and all(len(v) == 2 for v in ref.values())
    assert one == {k: ref[k] for k in (2, 3)}
    lr = lambda path: {row["iteration"]: row["lr"] for row in map(json.loads, open(path))}
    assert lr(out / "metrics.json") == lr(uninterrupted / "metrics.json") and len(lr(out / "metrics.json")) == 4
