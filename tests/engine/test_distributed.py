"""2 CPU processes (gloo) with 1 image each == 1 process with the same 2 images (gradients averaged)."""
import json
import os
import shutil

import pytest
import torch

from detgn.config import get_cfg
from detgn.modeling import build_model

from .util import QUICK, REPO, run_train_net


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
    json.dump({"images": images, "annotations": out_anns, "categories": src["categories"]},
              open(os.path.join(root, "nuclei_mini", "annotations", "train.json"), "w"))


ARGS = ["SOLVER.MAX_ITER", "1", "SOLVER.WARMUP_ITERS", "0", "SOLVER.BASE_LR", "0.02", "DATASETS.TEST", "()",
        "INPUT.RANDOM_FLIP", "none", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
        # take every anchor / proposal so that the losses do not depend on random sampling
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "1000000", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "1000000",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "SOLVER.CHECKPOINT_PERIOD", "1000"]


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_two_processes_average_gradients(tmp_path):
    data_root = tmp_path / "data"
    _twin_dataset(str(data_root))
    cfg = get_cfg()
    cfg.merge_from_file(QUICK)
    torch.manual_seed(0)
    init = build_model(cfg).state_dict()
    torch.save({"model": init}, tmp_path / "init.pth")
    env = {"DETGN_DATASETS": str(data_root)}
    common = ["--config-file", QUICK, "MODEL.WEIGHTS", str(tmp_path / "init.pth")] + ARGS
    r1 = run_train_net(common + ["OUTPUT_DIR", str(tmp_path / "one")], env=env)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = run_train_net(["--num-gpus", "2"] + common + ["OUTPUT_DIR", str(tmp_path / "two")], env=env)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a = torch.load(tmp_path / "one" / "model_final.pth", weights_only=True)["model"]
    b = torch.load(tmp_path / "two" / "model_final.pth", weights_only=True)["model"]
    moved = 0
    for k in a:
        da, db = a[k].float() - init[k].float(), b[k].float() - init[k].float()
        if da.abs().max() > 0:
            moved += 1
        torch.testing.assert_close(db, da, rtol=2e-3, atol=2e-6, msg=lambda m: f"{k}: {m}")
    assert moved > 100
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


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_started_by_torchrun(tmp_path):
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*; train_net joins that group instead of spawning."""
    import subprocess
    import sys

    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           os.path.join(REPO, "tools", "train_net.py"), "--config-file", QUICK, "SOLVER.MAX_ITER", "1", "DATASETS.TEST", "()",
           "SOLVER.CHECKPOINT_PERIOD", "1000", "OUTPUT_DIR", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    log = open(out / "log.txt").read()
    assert "Rank 0 of 2" in log
    assert (out / "model_final.pth").exists()
