"""The Triton GroupNorm(+ReLU): its kernels against torch's GroupNorm (through Triton's interpreter on CPU,
compiled on a GPU), the module's state dict, and the config refusing it where it cannot run."""

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F

from detgn.config import get_cfg
from detgn.config.rules import check_config
from detgn.layers import fused_group_norm as fgn
from detgn.utils.errors import ConfigValueError

# the kernels need the triton package; the config's refusals are tested with and without it
needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs the triton package")

HERE = os.path.dirname(os.path.abspath(__file__))


@needs_triton
def test_kernels_through_the_triton_interpreter():
    """Values and gradients equal torch's for both layouts, odd sizes, bf16, a large mean, and the box head's fused
    GN+ReLU (tests/layers/interpreted_fused_group_norm.py, in a subprocess with TRITON_INTERPRET=1)."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            os.path.join(HERE, "interpreted_fused_group_norm.py"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout, r.stdout[-2000:]


def test_module_is_a_group_norm_with_the_same_state_dict():
    m = fgn.FusedGroupNorm(8, 32)
    assert isinstance(m, torch.nn.GroupNorm)
    assert set(m.state_dict()) == set(torch.nn.GroupNorm(8, 32).state_dict()) == {"weight", "bias"}


def test_config_refuses_triton_where_it_cannot_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.GROUP_NORM.IMPL = "triton"
    with pytest.raises(
        ConfigValueError, match=r"MODEL.GROUP_NORM.IMPL = 'triton': must be 'torch' unless MODEL.DEVICE is cuda"
    ):
        check_config(cfg)
    # on a CUDA device without the triton package: the package is named
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton now raises ImportError
    with pytest.raises(ConfigValueError, match="needs the triton package"):
        fgn.check_fused_group_norm_available("cuda")
    cfg.MODEL.GROUP_NORM.IMPL = "apex"
    with pytest.raises(ConfigValueError, match=r"MODEL.GROUP_NORM.IMPL = 'apex': must be one of 'torch', 'triton'"):
        check_config(cfg)


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernels_equal_torch():
    fgn._KERNELS = None
    x = torch.randn(2, 64, 50, 70, device="cuda").to(memory_format=torch.channels_last)
    w, b = torch.randn(64, device="cuda"), torch.randn(64, device="cuda")
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 2e-2)):
        xi = x.to(dtype).requires_grad_()
        y = fgn.fused_group_norm(xi, 32, w, b, relu=True)
        ref = F.relu(F.group_norm(x.float(), 32, w, b))
        torch.testing.assert_close(y.float(), ref, rtol=tol, atol=tol)
        assert y.is_contiguous(memory_format=torch.channels_last)
