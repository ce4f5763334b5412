"""configs/new_baselines: detectron2's large-scale-jitter recipes with GN (and with SyncBN, for the comparison) build
what they say and train one iteration (at 128 pixels, 2 images, on the bundled data)."""

import glob
import os

import pytest
import torch

from detgn.config import get_cfg
from detgn.data.transforms import FixedSizeCrop, ResizeScale, build_augmentation
from detgn.engine import DefaultTrainer, seed_all_rng
from tests.util import REPO

RECIPES = sorted(glob.glob(os.path.join(REPO, "configs", "new_baselines", "mask_rcnn_*_LSJ_*.yaml")))


def test_six_recipes():
    names = [os.path.basename(p) for p in RECIPES]
    assert names == [f"mask_rcnn_R_50_FPN_{e}ep_LSJ_{n}.yaml" for e in (100, 200, 400) for n in ("gn", "syncbn")]


@pytest.mark.parametrize("path", RECIPES, ids=[os.path.basename(p) for p in RECIPES])
def test_recipe_as_detectron2_and_one_iteration(path, tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    epochs = int(os.path.basename(path).split("_")[5][:-2])
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.WEIGHT_DECAY, s.WARMUP_ITERS, s.WARMUP_FACTOR) == (64, 0.1, 4e-5, 500, 0.067)
    assert s.MAX_ITER == 184375 * epochs // 100 and list(s.STEPS) == [163889 * epochs // 100, 177546 * epochs // 100]
    assert s.AMP.ENABLED and s.AMP.DTYPE == "float16" and cfg.MODEL.WEIGHTS == "" and cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert list(cfg.MODEL.RPN.CONV_DIMS) == [-1, -1] and (
        cfg.MODEL.ROI_BOX_HEAD.NUM_CONV,
        cfg.MODEL.ROI_BOX_HEAD.NUM_FC,
    ) == (4, 1)
    augs = build_augmentation(cfg, is_train=True)
    assert isinstance(augs[0], ResizeScale) and (augs[0].min_scale, augs[0].max_scale) == (0.1, 2.0)
    assert isinstance(augs[1], FixedSizeCrop) and augs[1].crop_size == (1024, 1024)
    norm = "GN" if path.endswith("_gn.yaml") else "SyncBN"
    assert cfg.MODEL.RESNETS.NORM == cfg.MODEL.FPN.NORM == norm
    assert cfg.MODEL.ROI_BOX_HEAD.NORM == cfg.MODEL.ROI_MASK_HEAD.NORM == ("GN" if norm == "GN" else "NaiveSyncBN")
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "SOLVER.AMP.DTYPE", "auto", "SOLVER.IMS_PER_BATCH", "2", "INPUT.LSJ.IMAGE_SIZE", "128"]
        + ["DATASETS.TRAIN", '("nuclei_mini_train",)', "DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "1"]
        + ["SOLVER.MAX_ITER", "1", "SOLVER.STEPS", "()", "SOLVER.WARMUP_ITERS", "0", "OUTPUT_DIR", str(tmp_path)]
        + ["DATALOADER.NUM_WORKERS", "0"]
    )
    seed_all_rng(0)
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    keys = trainer.model.state_dict()
    assert "proposal_generator.rpn_head.conv.conv1.weight" in keys  # detectron2's names for the 2-conv RPN head
    assert os.path.isfile(tmp_path / "model_final.pth")
    assert all(torch.isfinite(v).all() for v in keys.values() if v.is_floating_point())
