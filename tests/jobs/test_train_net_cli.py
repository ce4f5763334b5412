import json
import os

import pytest

from tests.util import QUICK_RUN_ARGS, tool_module

from tests.engine.util import QUICK, SMALL_MODEL, popen_train_net, run_train_net


def _cli(argv, capsys):
    """tools/train_net.py's cli in this process (its refusals happen before any set-up): (status, stdout, stderr)."""
    try:
        status = tool_module("train_net").cli(argv)
    except SystemExit as e:  # --help
        status = e.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_help_lists_every_option(capsys):
    """--help shows every option of the parser with its own description (not only its name)."""
    from detgn.jobs import default_argument_parser

    status, stdout, _ = _cli(["--help"], capsys)
    assert status == 0
    text = " ".join(stdout.split())  # argparse wraps lines
    for action in default_argument_parser()._actions:  # argparse has no public list of its actions
        if action.dest == "help":
            continue
        name = action.option_strings[0] if action.option_strings else action.metavar
        assert action.help and len(action.help.split()) >= 3, f"{name} has no real description"
        assert name in text and " ".join(action.help.split()[:4]) in text, name


def test_wrong_config_path_is_one_line(capsys):
    status, _, err = _cli(["--config-file", "configs/does_not_exist.yaml"], capsys)
    assert status == 2
    assert err.strip().count("\n") == 0 and "Config file not found: configs/does_not_exist.yaml" in err
    assert "Traceback" not in err


def test_typo_in_override_is_one_line(capsys):
    status, _, err = _cli(["--config-file", QUICK, "SOLVER.BASE_LRR", "0.1"], capsys)
    assert status == 2
    assert "Traceback" not in err and err.strip().count("\n") == 0
    assert "SOLVER.BASE_LRR" in err and "SOLVER.BASE_LR" in err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, _, err = _cli(["--config-file", QUICK, "OUTPUT_DIR", str(blocker / "sub")], capsys)
    assert status == 2 and "not writable" in err and "Traceback" not in err


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_train_then_eval_only_end_to_end(quick_run, tmp_path):
    out, _ = quick_run
    for f in (
        "config.yaml",
        "log.txt",
        "metrics.json",
        "model_final.pth",
        "last_checkpoint",
        "inference/nuclei_mini_val/coco_instances_results.json",
        "inference/nuclei_mini_val/instances_predictions.pth",
    ):
        assert (out / f).exists(), f
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(out))
    assert len(os.listdir(out / "predictions")) == 1
    log = (out / "log.txt").read_text()
    assert "copypaste: Task: segm" in log and "Total inference time" in log and "eta:" in log
    rows = [json.loads(l) for l in open(out / "metrics.json")]
    assert rows[-1].get("segm/AP") is not None and rows[-1].get("bbox/AP50") is not None
    ev = tmp_path / "eval"
    snapshot = {
        f: (out / f).read_bytes() for f in ("config.yaml", "metrics.json", "model_final.pth", "last_checkpoint")
    }
    # side by side (independent): --eval-only of the final weights into another folder, and a rerun without
    # --resume into the finished run, which must be refused and leave it as it is
    procs = [
        popen_train_net(
            [
                "--config-file",
                QUICK,
                "--eval-only",
                "MODEL.WEIGHTS",
                str(out / "model_final.pth"),
                "OUTPUT_DIR",
                str(ev),
                # the plain evaluation, then the same weights with test-time augmentation (one size, flipped too)
                "TEST.AUG.ENABLED",
                "True",
                "TEST.AUG.MIN_SIZES",
                "(96,)",
                "TEST.AUG.MAX_SIZE",
                "160",
            ]
            + QUICK_RUN_ARGS
            + SMALL_MODEL,
            capture=True,
        ),
        popen_train_net(["--config-file", QUICK, "OUTPUT_DIR", str(out)] + QUICK_RUN_ARGS + SMALL_MODEL, capture=True),
    ]
    (_, err_eval), (_, err) = [p.communicate(timeout=600) for p in procs]
    assert procs[0].returncode == 0, err_eval[-3000:]
    a = json.load(open(out / "inference/nuclei_mini_val/coco_instances_results.json"))
    b = json.load(open(ev / "inference/nuclei_mini_val/coco_instances_results.json"))
    assert len(a) == len(b) and [d["score"] for d in a] == pytest.approx([d["score"] for d in b], rel=1e-4)
    assert (ev / "inference_TTA/nuclei_mini_val/coco_instances_results.json").exists()
    eval_log = (ev / "log.txt").read_text()
    assert "copypaste: Task: bbox_TTA" in eval_log and "copypaste: Task: segm_TTA" in eval_log
    assert procs[1].returncode == 2 and "holds another run" in err and "--resume" in err and "--overwrite" in err, err[
        -2000:
    ]
    # a resume whose config does not fit the checkpoint, one past MAX_ITER: refused, the run unchanged
    r = run_train_net(
        [
            "--config-file",
            QUICK,
            "SOLVER.MAX_ITER",
            "4",
            "OUTPUT_DIR",
            str(out),
            "--resume",
        ]
        + SMALL_MODEL
        + ["MODEL.ROI_BOX_HEAD.FC_DIM", "96"]  # another box head than the checkpoint's
    )
    assert r.returncode == 2 and "does not fit the model" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr[
        -2000:
    ]
    r = run_train_net(
        ["--config-file", QUICK, "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out), "--resume"] + SMALL_MODEL
    )
    assert r.returncode == 2 and "more than SOLVER.MAX_ITER 1" in r.stderr, r.stderr[-2000:]
    assert {f: (out / f).read_bytes() for f in snapshot} == snapshot
