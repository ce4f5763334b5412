"""Every config in configs/ loads and builds its model (no config rots unnoticed)."""

import glob
import os

import pytest
import torch

from detgn.config import get_cfg, get_classifier_cfg
from detgn.layers.norm import FrozenBatchNorm2d, LayerNorm2d, NaiveSyncBatchNorm
from detgn.modeling import build_model

from tests.util import REPO

CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_configs_found():
    assert len(CONFIGS) >= 12


_NORM_TYPES = (torch.nn.GroupNorm, FrozenBatchNorm2d, torch.nn.modules.batchnorm._BatchNorm, LayerNorm2d)
_EXPECTED = {
    "GN": torch.nn.GroupNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "BN": torch.nn.BatchNorm2d,
    "SyncBN": torch.nn.SyncBatchNorm,
    "NaiveSyncBN": NaiveSyncBatchNorm,
    "LN": LayerNorm2d,
    "": None,
}


def _norm_types(modules):
    """The _EXPECTED classes of the norm layers in `modules` (FP32StatsGroupNorm counts as GroupNorm)."""
    order = [
        FrozenBatchNorm2d,
        NaiveSyncBatchNorm,
        torch.nn.SyncBatchNorm,
        torch.nn.BatchNorm2d,
        torch.nn.GroupNorm,
        LayerNorm2d,
    ]
    return {
        next(c for c in order if isinstance(m, c))
        for mod in modules
        for m in mod.modules()
        if isinstance(m, _NORM_TYPES)
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    """The model a config builds has what the config says: the norm of each component, the frozen
    stages, weight standardisation, the head sizes and the number of classes."""
    classifier = os.path.relpath(path, REPO).startswith(os.path.join("configs", "ImageNet"))
    cfg = get_classifier_cfg() if classifier else get_cfg()  # as tools/train_classifier.py and train_net.py read them
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    if cfg.SOLVER.AMP.DTYPE == "float16":  # a CUDA recipe (fp16 autocast) built on the CPU, as its comment says
        cfg.SOLVER.AMP.DTYPE = "auto"
    if (
        cfg.MODEL.META_ARCHITECTURE == "ImageNetClassifier"
    ):  # tools/train_classifier.py sets the classes from the folders
        cfg.CLASSIFIER.NUM_CLASSES = 10
        model = build_model(cfg)
        assert _norm_types([model.backbone.bottom_up]) == {_EXPECTED[cfg.MODEL.RESNETS.NORM]}
        assert all(p.requires_grad for p in model.parameters()) and model.fc.out_features == 10
        return
    model = build_model(cfg)
    heads = model.roi_heads
    c4 = cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads"  # ResNet backbone without FPN; res5 is the box head
    bb = model.backbone if not c4 else torch.nn.Module()
    if c4:
        bb.bottom_up = model.backbone
        assert cfg.MODEL.BACKBONE.NAME == "build_resnet_backbone" and list(model.backbone.output_shape()) == ["res4"]
        assert _norm_types([heads.res5]) == {_EXPECTED[cfg.MODEL.RESNETS.NORM]}
    cascade = cfg.MODEL.ROI_HEADS.NAME == "CascadeROIHeads"
    box_heads = list(heads.box_head) if cascade else [] if c4 else [heads.box_head]
    predictors = list(heads.box_predictor) if cascade else [heads.box_predictor]
    assert len(predictors) == (len(cfg.MODEL.ROI_BOX_CASCADE_HEAD.IOUS) if cascade else 1)
    fpn_parts = [m for name, m in bb.named_children() if name != "bottom_up"]
    freeze_at = cfg.MODEL.BACKBONE.FREEZE_AT
    trained_stages = [
        m for name, m in bb.bottom_up.named_children() if (1 if name == "stem" else int(name[3])) > freeze_at
    ]
    if freeze_at > 0 and cfg.MODEL.RESNETS.NORM != "GN":  # frozen stages: BN-type norms become FrozenBN (GN stays GN)
        frozen = [
            m for name, m in bb.bottom_up.named_children() if (1 if name == "stem" else int(name[3])) <= freeze_at
        ]
        assert _norm_types(frozen) <= {FrozenBatchNorm2d}
    for modules, key in (
        (trained_stages, "RESNETS"),
        (fpn_parts, "FPN"),
        (box_heads, "ROI_BOX_HEAD"),
        ([heads.mask_head] if cfg.MODEL.MASK_ON else [], "ROI_MASK_HEAD"),
    ):
        if not modules:
            continue
        expected = _EXPECTED[cfg.MODEL[key].NORM]
        assert _norm_types(modules) == ({expected} if expected else set()), f"{key}.NORM {cfg.MODEL[key].NORM!r}"
    ws = cfg.MODEL.WEIGHT_STANDARDIZATION
    for modules, flag in (([bb.bottom_up], ws.BACKBONE), (fpn_parts, ws.FPN), (box_heads, ws.BOX_HEAD)):
        convs = [m for mod in modules for m in mod.modules() if hasattr(m, "weight_standardization")]
        assert all(c.weight_standardization == flag for c in convs)  # the 2fc box head has no conv
    for name, p in bb.bottom_up.named_parameters():
        stage = 1 if name.startswith("stem.") else int(name[3])  # "resK.*"
        assert p.requires_grad == (stage > freeze_at), f"{name} with FREEZE_AT {freeze_at}"
    k = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    for predictor in predictors:
        assert predictor.cls_score.out_features == k + 1
        assert predictor.bbox_pred.out_features == 4 * (1 if cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG else k)
    for box_head in box_heads:
        box_convs = [m for m in box_head.modules() if isinstance(m, torch.nn.Conv2d)]
        box_fcs = [m for m in box_head.modules() if isinstance(m, torch.nn.Linear)]
        assert len(box_convs) == cfg.MODEL.ROI_BOX_HEAD.NUM_CONV and len(box_fcs) == cfg.MODEL.ROI_BOX_HEAD.NUM_FC
    deform = [m for m in bb.bottom_up.modules() if type(m).__name__ == "DeformBottleneckBlock"]
    assert {int(n[3]) for n, m in bb.bottom_up.named_modules() if m in deform} == {
        i + 2 for i, on in enumerate(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE) if on
    }
    if cfg.MODEL.MASK_ON:
        assert heads.mask_head.predictor.out_channels == (1 if cfg.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK else k)
    if "scratch" in os.path.basename(path):
        assert freeze_at == 0 and cfg.MODEL.WEIGHTS == ""
