"""Fine-tuning from an ImageNet-style GN backbone file runs through tools/train_net.py."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.util import QUICK, REPO, run_tool_here


@pytest.mark.slow  # subprocess training; `pytest -m 'not slow'` skips it
def test_finetune_from_converted_gn_imagenet_backbone(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c))
    torch.save(tv.state_dict(), tmp_path / "resnet50_gn.pth")  # an ImageNet-style (torchvision/timm) GN file
    argv = [str(tmp_path / "resnet50_gn.pth"), str(tmp_path / "r50_gn_detgn.pth"), "--config-file", QUICK]
    status, stdout, err = run_tool_here("convert_weights", argv, capsys)
    assert status == 0, err
    assert "torchvision" in stdout and "unused in file" in stdout
    out = tmp_path / "ft"
    r = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config-file",
            QUICK,
            "MODEL.WEIGHTS",
            str(tmp_path / "r50_gn_detgn.pth"),
            "SOLVER.MAX_ITER",
            "2",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log = open(out / "log.txt").read()
    assert "Weight loading report" in log
    matched = int([l for l in log.splitlines() if l.strip().startswith("matched")][0].split()[-1])
    assert matched == 159  # every ResNet-50 tensor landed: 53 conv weights + 53 GN x (weight, bias)
    final = torch.load(out / "model_final.pth", weights_only=True)["model"]
    # the frozen stem kept the pretrained values exactly
    assert torch.equal(final["backbone.bottom_up.stem.conv1.weight"], tv.state_dict()["conv1.weight"])
