import os

import pytest
import torch

from tests.util import QUICK_RUN_ARGS, REPO

# one thread per pytest-xdist worker (the workers share the cores), else up to 2
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _restore_detgn_logging():
    """A tool run in-process (setup_logger) leaves handlers on the "detgn" logger whose stream is this test's
    captured stdout: they are closed after the test, so a later test's log lines never go to a closed file."""
    import logging

    names = ("detgn", "fvcore")
    before = {n: list(logging.getLogger(n).handlers) for n in names}
    yield
    for n in names:
        log = logging.getLogger(n)
        for h in [h for h in log.handlers if h not in before[n]]:
            log.removeHandler(h)
            h.close()


@pytest.fixture
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One finished `tools/train_net.py` run shared by the tests that only read a finished run (a subprocess
    costs ~6 s of start-up alone): the quick-schedule config with the narrow model, 4 iterations, evaluation after
    iteration 2 and after the last one, one prediction picture. Returns (OUTPUT_DIR, CompletedProcess). A test
    that writes into it must leave it as it was (the tests that try to overwrite it check exactly that).
    Under pytest-xdist the workers share it: the first one trains it (under a lock in the session's common temp
    folder), the others wait and read it."""
    import fcntl
    import json
    import subprocess

    from tests.engine.util import QUICK, SMALL_MODEL, run_train_net

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp().parent if worker else tmp_path_factory.mktemp("quick_run")
    out, done = root / "quick_run_shared" / "run", root / "quick_run_shared.json"
    with open(root / "quick_run_shared.lock", "w") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if done.exists():
            saved = json.loads(done.read_text())
            return out, subprocess.CompletedProcess(saved["args"], 0, saved["stdout"], saved["stderr"])
        r = run_train_net(["--config-file", QUICK, "OUTPUT_DIR", str(out)] + QUICK_RUN_ARGS + SMALL_MODEL)
        assert r.returncode == 0, r.stderr[-3000:]
        done.write_text(json.dumps({"args": r.args, "stdout": r.stdout, "stderr": r.stderr}))
    return out, r


def pytest_configure(config):
    """Record caches of the test datasets go to a folder of this test session (subprocesses inherit it),
    not to the user's ~/.cache."""
    if "DETGN_CACHE_DIR" not in os.environ:
        import tempfile

        os.environ["DETGN_CACHE_DIR"] = tempfile.mkdtemp(prefix="detgn_test_cache_")
        config._detgn_cache_dir = os.environ["DETGN_CACHE_DIR"]


def pytest_unconfigure(config):
    """Remove the record cache folder this session made (pytest_configure), so runs leave nothing in /tmp."""
    made = getattr(config, "_detgn_cache_dir", None)
    if made:
        import shutil

        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("DETGN_CACHE_DIR", None)
