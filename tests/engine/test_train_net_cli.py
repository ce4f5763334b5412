import re

from .util import QUICK, run_train_net


def test_help_lists_every_option():
    r = run_train_net(["--help"])
    assert r.returncode == 0
    for opt in ("--config-file", "--resume", "--eval-only", "--num-gpus", "--num-machines", "--machine-rank", "--dist-url", "KEY VALUE"):
        assert opt in r.stdout
    # every option has a description on its line or the next
    lines = r.stdout.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^\s+(--[a-z-]+)", line)
        if m and m.group(1) != "--help":
            rest = line.split(m.group(1), 1)[1].strip()
            assert rest and not rest.isupper() or (i + 1 < len(lines) and lines[i + 1].strip()), line


def test_wrong_config_path_is_one_line():
    r = run_train_net(["--config-file", "configs/does_not_exist.yaml"])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "Config file not found: configs/does_not_exist.yaml" in r.stderr
    assert "Traceback" not in r.stderr


def test_typo_in_override_is_one_line():
    r = run_train_net(["--config-file", QUICK, "SOLVER.BASE_LRR", "0.1"])
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0
    assert "SOLVER.BASE_LRR" in r.stderr and "SOLVER.BASE_LR" in r.stderr


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_train_net(["--config-file", QUICK, "OUTPUT_DIR", str(blocker / "sub")])
    assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr
