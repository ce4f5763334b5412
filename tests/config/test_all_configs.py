"""Every config in configs/ loads and builds its model (no config rots unnoticed)."""
import glob
import os

import pytest
import torch

from detgn.config import get_cfg
from detgn.modeling import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))


def test_configs_found():
    assert len(CONFIGS) >= 12


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_config_builds(path):
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert n > 1_000_000
    if "gn" in os.path.basename(path) or "nuclei" in path or "GN" in path:
        assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    if "ws" in os.path.basename(path):
        assert any(getattr(m, "weight_standardization", False) for m in model.modules())
    if "scratch" in os.path.basename(path):
        assert cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.WEIGHTS == ""
        assert all(p.requires_grad for p in model.parameters())
