"""2 CPU processes (gloo) with 1 image each == 1 process with the same 2 images (gradients averaged)."""

import json
import os
import shutil

import pytest
import torch

from detgn.config import get_cfg
from detgn.modeling import build_model

from detgn.engine.launch import find_free_port

from .util import QUICK, REPO, SMALL_MODEL, popen_train_net, run_train_net


def _twin_dataset(root):
    """nuclei_mini layout whose train split holds one image twice (ids 1 and 2)."""
    src = json.load(open(os.path.join(REPO, "datasets", "nuclei_mini", "annotations", "train.json")))
    img = next(i for i in src["images"] if (i["height"], i["width"]) == (256, 256))
    anns = [a for a in src["annotations"] if a["image_id"] == img["id"]]
    images, out_anns = [], []
    for new_id in (1, 2):
        images.append(dict(img, id=new_id))
        for a in anns:
            out_anns.append(dict(a, id=len(out_anns) + 1, image_id=new_id))
    os.makedirs(os.path.join(root, "nuclei_mini", "annotations"))
    shutil.copytree(os.path.join(REPO, "datasets", "nuclei_mini", "train"), os.path.join(root, "nuclei_mini", "train"))
    json.dump(
        {"images": images, "annotations": out_anns, "categories": src["categories"]},
        open(os.path.join(root, "nuclei_mini", "annotations", "train.json"), "w"),
    )
    shutil.copytree(os.path.join(REPO, "datasets", "nuclei_mini", "val"), os.path.join(root, "nuclei_mini", "val"))
    shutil.copy(
        os.path.join(REPO, "datasets", "nuclei_mini", "annotations", "val.json"),
        os.path.join(root, "nuclei_mini", "annotations"),
    )


ARGS = [
    "SOLVER.MAX_ITER",
    "1",
    "SOLVER.WARMUP_ITERS",
    "0",
    "SOLVER.BASE_LR",
    "0.02",
    "DATASETS.TEST",
    "()",
    "INPUT.RANDOM_FLIP",
    "none",
    "DATALOADER.ASPECT_RATIO_GROUPING",
    "False",
    # take every anchor / proposal so that the losses do not depend on random sampling
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "1000000",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "1000000",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "100",
    "SOLVER.CHECKPOINT_PERIOD",
    "1000",
]


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_two_processes_average_gradients(tmp_path):
    data_root = tmp_path / "data"
    _twin_dataset(str(data_root))
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    cfg.merge_from_list(SMALL_MODEL)
    torch.manual_seed(0)
    init = build_model(cfg).state_dict()
    torch.save({"model": init}, tmp_path / "init.pth")
    env = {"DETGN_DATASETS": str(data_root)}
    common = ["--config-file", QUICK, "MODEL.WEIGHTS", str(tmp_path / "init.pth")] + SMALL_MODEL + ARGS
    # three independent jobs side by side (own output folders; most of each run is Python start-up): 1 process,
    # 1 machine x 2 processes, and 2 machines x 1 process (two launches on 127.0.0.1, --machine-rank 0 and 1) that
    # also evaluates the 12 validation images: 6 per process, gathered and scored once, on global rank 0
    runs = [
        popen_train_net(extra + common + ["OUTPUT_DIR", str(tmp_path / out)], env=env, capture=True)
        for extra, out in (([], "one"), (["--num-gpus", "2"], "two"))
    ]
    port = str(find_free_port())
    machines = [
        popen_train_net(
            ["--num-machines", "2", "--machine-rank", str(r), "--dist-url", f"tcp://127.0.0.1:{port}"]
            + common
            + ["OUTPUT_DIR", str(tmp_path / f"machines{r}"), "DATASETS.TEST", "('nuclei_mini_val',)"],
            env=env,
            capture=True,
        )
        for r in (0, 1)
    ]
    for r in runs:
        _, err = r.communicate(timeout=600)
        assert r.returncode == 0, err[-3000:]
    outs = [m.communicate(timeout=600) for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outs[0][1][-2000:] + outs[1][1][-2000:]
    a = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["model"]
    m = torch.load(tmp_path / "machines0" / "model_final.pth", weights_only=True)["model"]
    assert all(torch.equal(m[k], b[k]) for k in b), (
        "2 machines x 1 process must give 1 machine x 2 processes' weights bit for bit"
    )
    lm = json.loads(open(tmp_path / "machines0" / "metrics.json").readline())
    l2 = json.loads(open(tmp_path / "two" / "metrics.json").readline())
    assert all(
        lm[k] == l2[k] for k in ("loss_cls", "loss_mask", "loss_rpn_cls", "loss_box_reg", "loss_rpn_loc", "total_loss")
    )
    assert not (tmp_path / "machines1").exists() or not any(
        f.endswith(".pth") for f in os.listdir(tmp_path / "machines1")
    )
    assert not (tmp_path / "machines1" / "inference").exists()
    log0 = open(tmp_path / "machines0" / "log.txt").read()
    assert "Start inference on 6 images" in log0 and log0.count("Evaluation results for bbox") == 1
    assert (tmp_path / "machines0" / "inference" / "nuclei_mini_val" / "coco_instances_results.json").exists()
    assert "bbox/AP" in open(tmp_path / "machines0" / "metrics.json").read().splitlines()[-1]
    moved = 0
    for k in a:
        da, db = a[k].float() - init[k].float(), b[k].float() - init[k].float()
        if da.abs().max() > 0:
            moved += 1
        torch.testing.assert_close(db, da, rtol=2e-3, atol=2e-6, msg=lambda m: f"{k}: {m}")
    assert moved > 60
    # the losses logged (averaged over ranks) equal the 1-process losses
    la = json.loads(open(tmp_path / "one" / "metrics.json").readline())
    lb = json.loads(open(tmp_path / "two" / "metrics.json").readline())
    for k in ("loss_cls", "loss_mask", "loss_rpn_cls", "loss_box_reg", "loss_rpn_loc"):
        assert lb[k] == pytest.approx(la[k], rel=1e-4), k
    # only rank 0 wrote files
    files = sorted(os.listdir(tmp_path / "two"))
    assert not [f for f in files if "rank" in f]
    log = open(tmp_path / "two" / "log.txt").read()
    assert "Rank 0 of 2" in log and "Rank 1 of 2" not in log


def test_slurm_hostlist_and_environment():
    from detgn.engine.slurm import expand_hostlist, slurm_environment

    assert expand_hostlist("gpu[003-004,010],login1") == ["gpu003", "gpu004", "gpu010", "login1"]
    assert expand_hostlist("rack[1-2]-n[08-09]") == ["rack1-n08", "rack1-n09", "rack2-n08", "rack2-n09"]
    srun = {
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "8",
        "SLURM_STEP_NODELIST": "gpu[003-006]",
        "SLURM_JOB_NODELIST": "gpu[003-006]",
        "SLURM_JOB_ID": "4242424",
    }
    assert slurm_environment(srun) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu003",
        "MASTER_PORT": str(20000 + 4242424 % 20000),
    }
    assert (
        slurm_environment(dict(srun, MASTER_PORT="29500", MASTER_ADDR="head"))["MASTER_ADDR"] == "head"
    )  # the user's win
    assert slurm_environment(dict(srun, RANK="0", WORLD_SIZE="2")) is None  # torchrun's variables win
    batch = {k: v for k, v in srun.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert slurm_environment(batch) is None  # the sbatch script itself (not an srun step): a plain launch


def test_a_machine_that_never_joins_is_named_within_the_timeout(tmp_path):
    """(srun tasks, torchrun on 2 nodes and preempted/restarted jobs: test_restarts.py)"""
    r = run_train_net(
        [
            "--config-file",
            QUICK,
            "--num-machines",
            "2",
            "--machine-rank",
            "0",
            "--dist-url",
            f"tcp://127.0.0.1:{find_free_port()}",
            "--dist-timeout",
            "2",
            "OUTPUT_DIR",
            str(tmp_path / "alone"),
        ],
        timeout=300,
    )
    assert (
        r.returncode == 2 and "could not join the process group at tcp://127.0.0.1:" in r.stderr and "1/2" in r.stderr
    ), r.stderr[-2000:]
    assert "Traceback" not in r.stderr
