"""claim_output_dir: another run's folder refused or moved aside, a concurrent run refused by pid and host,
a lock left by a dead run ignored, temp files of an interrupted save removed; resume-hint helpers."""

import argparse
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from detgn.jobs.output_dir import LOCK_FILE, OutputDirError, claim_output_dir, release_output_dir


def test_fresh_and_refused_and_overwrite(tmp_path):
    out = tmp_path / "run"
    assert claim_output_dir(str(out), resume=False) is None and out.is_dir()
    release_output_dir(str(out))
    for name in ("model_final.pth", "last_checkpoint", "metrics.json"):
        (out / name).write_text(name)
    with pytest.raises(OutputDirError, match="holds another run .*--resume.*--overwrite"):
        claim_output_dir(str(out), resume=False)
    assert claim_output_dir(str(out), resume=True) is None  # continuing it is fine
    release_output_dir(str(out))
    with pytest.raises(OutputDirError, match="contradict"):
        claim_output_dir(str(out), resume=True, overwrite=True)
    moved = claim_output_dir(str(out), resume=False, overwrite=True, now=0)
    release_output_dir(str(out))
    assert (
        moved.startswith(str(out) + ".old-")
        and (tmp_path / os.path.basename(moved) / "model_final.pth").read_text() == "model_final.pth"
    )
    assert [n for n in os.listdir(out) if n != LOCK_FILE] == []
    (out / "model_0000009.pth").write_text("x")
    moved2 = claim_output_dir(str(out), resume=False, overwrite=True, now=0)  # same second: another name
    release_output_dir(str(out))
    assert moved2 != moved and os.path.isdir(moved2)


def test_concurrent_run_refused_and_dead_lock_ignored(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from detgn.jobs.output_dir import claim_output_dir
        claim_output_dir({str(out)!r}, resume=False)
        print("locked", flush=True)
        sys.stdin.read()
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(
            OutputDirError, match=f"in use by another run: pid {holder.pid} on host {socket.gethostname()}"
        ):
            claim_output_dir(str(out), resume=True)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    (out / "model_0000004.pth.tmp.999999999").write_text("half a save")  # its writer is gone
    (out / "notes.pth.tmp.1").write_text("not ours")
    claim_output_dir(str(out), resume=True)  # the holder exited: its lock went with it
    release_output_dir(str(out))
    assert sorted(os.listdir(out)) == sorted([LOCK_FILE, "notes.pth.tmp.1"])


def test_resume_hint_is_shell_quoted_and_broken_tag_named(tmp_path):
    from detgn.checkpoint.resume import find_resumable
    from detgn.config import get_cfg
    from detgn.jobs.cli import last_checkpoint_hint

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    args = argparse.Namespace(config_file="my cfg.yaml", opts=["INPUT.MIN_SIZE_TRAIN", "(128,)"], num_gpus=1)
    assert "No checkpoint was saved" in last_checkpoint_hint(cfg, args, "tools/train_net.py")
    for name in ("model_0000099.pth", "model_0000199.pth"):
        (tmp_path / name).write_bytes(b"x")
    for content in ("", "model_00001", "../elsewhere.pth"):
        (tmp_path / "last_checkpoint").write_text(content)
        last, problem = find_resumable(str(tmp_path))
        assert last is None and "model_0000099.pth, model_0000199.pth" in problem
        assert f"echo model_0000199.pth > {tmp_path}/last_checkpoint" in problem
    (tmp_path / "last_checkpoint").write_text("model_0000199.pth")
    hint = last_checkpoint_hint(cfg, args, "tools/train_net.py")
    assert hint.endswith("tools/train_net.py --config-file 'my cfg.yaml' --resume INPUT.MIN_SIZE_TRAIN '(128,)'")


@pytest.mark.parametrize("where", ["cwd", "parent"])
def test_overwrite_of_the_current_folder_is_one_line(tmp_path, monkeypatch, where):
    out = tmp_path / "run"
    (out / "sub").mkdir(parents=True)
    (out / "model_final.pth").write_text("x")
    monkeypatch.chdir(out if where == "cwd" else out / "sub")
    with pytest.raises(OutputDirError, match="cannot move OUTPUT_DIR .* aside: it is") as e:
        claim_output_dir("." if where == "cwd" else "..", resume=False, overwrite=True)
    assert "\n" not in str(e.value) and (out / "model_final.pth").read_text() == "x"


def test_overwrite_dot_through_train_net(tmp_path, monkeypatch, capsys):
    from tests.util import QUICK, tool_module

    (tmp_path / "metrics.json").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    status = tool_module("train_net").cli(["--config-file", QUICK, "--overwrite", "OUTPUT_DIR", "."])
    err = capsys.readouterr().err
    assert status == 2 and "it is the current folder" in err and "Traceback" not in err
    assert (tmp_path / "metrics.json").read_text() == "{}\n"


def test_eval_only_into_a_live_training_is_refused(quick_run, tmp_path, capsys):
    """A training holds OUTPUT_DIR's lock (here: this test, as a second open file, which flock treats as another
    holder); --eval-only into that folder is refused and leaves its log.txt as it was."""
    import fcntl
    import shutil

    from tests.util import QUICK, QUICK_RUN_ARGS, tool_module
    from tests.engine.util import SMALL_MODEL

    src, _ = quick_run
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(src / "log.txt", live / "log.txt")
    lock = open(live / LOCK_FILE, "a+")
    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock.write('{"pid": 1234, "host": "trainer-host"}')
    lock.flush()
    before = (live / "log.txt").read_bytes()
    try:
        status = tool_module("train_net").cli(
            [
                "--config-file",
                QUICK,
                "--eval-only",
                *QUICK_RUN_ARGS,
                *SMALL_MODEL,
                "MODEL.WEIGHTS",
                str(src / "model_final.pth"),
                "OUTPUT_DIR",
                str(live),
            ]
        )
    finally:
        lock.close()
    err = capsys.readouterr().err
    assert status == 2 and "in use by another run" in err and f"OUTPUT_DIR {live}/eval" in err
    assert (live / "log.txt").read_bytes() == before and not (live / "inference").exists()
