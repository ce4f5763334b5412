"""engine/setup.py: the console starts with a short header (config, device, data, model, schedule); the files hold the rest."""

import pytest

from tests.util import QUICK, TINY_MODEL, run_tool

TINY = TINY_MODEL


@pytest.mark.slow  # two short training subprocesses
def test_console_starts_with_a_short_header_and_files_hold_the_rest(quick_run, tmp_path):
    out, r = quick_run  # the shared finished run (tests/conftest.py)
    lines = r.stdout.splitlines() + r.stderr.splitlines()
    log = open(out / "log.txt").read().splitlines()
    first_iter = next(i for i, l in enumerate(log) if "iter: 0" in l)
    assert first_iter <= 15, "\n".join(log[:first_iter])
    head = "\n".join(log[:first_iter])
    for expected in (
        "Config " + QUICK,
        "Device: cpu",
        "Data: train nuclei_mini_train: ",
        "test nuclei_mini_val: 12 images",
        "M parameters",
        "model.txt",
        "Schedule: 4 iterations x 2 images",
        "Precision for training",
    ):
        assert expected in head, expected
    assert "Running with config" not in "\n".join(lines) and "ResNet(" not in head
    assert "BasicBlock" in open(out / "model.txt").read() or "Bottleneck" in open(out / "model.txt").read()
    assert "SOLVER:" in open(out / "config.yaml").read()
    args = ["--config-file", QUICK, *TINY, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()"]
    r = run_tool("train_net.py", "--verbose", *args, "OUTPUT_DIR", str(tmp_path / "verbose"))
    assert r.returncode == 0, r.stderr[-2000:]
    verbose_log = open(tmp_path / "verbose" / "log.txt").read()
    assert "Running with config" in verbose_log and "roi_heads" in verbose_log
