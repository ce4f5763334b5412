"""Exact resume after SIGKILL: 2N iterations in one go == N, killed, resumed to 2N."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from .util import QUICK, REPO, SMALL_MODEL, run_train_net

N = 2
COMMON = [
    "SOLVER.MAX_ITER",
    str(2 * N),
    "SOLVER.CHECKPOINT_PERIOD",
    str(N),
    "SOLVER.STEPS",
    f"({N + 1},)",
    "DATASETS.TEST",
    "()",
    "SOLVER.WARMUP_ITERS",
    "1",
] + SMALL_MODEL


def _history(path, start):
    rows = [json.loads(l) for l in open(path)]
    keep = lambda r: {k: v for k, v in r.items() if "loss" in k or k in ("lr", "iteration") or k.startswith("roi_head")}
    return [keep(r) for r in rows if r["iteration"] >= start]


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_exact_resume_after_sigkill(tmp_path):
    full = tmp_path / "full"
    r = run_train_net(["--config-file", QUICK, "OUTPUT_DIR", str(full)] + COMMON)
    assert r.returncode == 0, r.stderr[-3000:]

    part = tmp_path / "part"
    # SIGKILL after iteration N (0-based), one past the checkpoint of iteration N - 1: the resume repeats it
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tests", "engine", "fault_train_net.py"),
            "--config-file",
            QUICK,
            "OUTPUT_DIR",
            str(part),
        ]
        + COMMON,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="2", DETGN_TEST_FAULT=f"0:{N}:SIGKILL"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr[-3000:]
    assert (part / "last_checkpoint").read_text().strip() == f"model_{N - 1:07d}.pth"
    assert not (part / "model_final.pth").exists()

    r = run_train_net(["--config-file", QUICK, "--resume", "OUTPUT_DIR", str(part)] + COMMON)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(full / "model_final.pth", weights_only=True)["model"]
    b = torch.load(part / "model_final.pth", weights_only=True)["model"]
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst == 0.0, f"max abs difference {worst}"
    assert _history(full / "metrics.json", N) == _history(part / "metrics.json", N)
    assert len(_history(part / "metrics.json", 0)) == 2 * N  # no duplicated iterations
