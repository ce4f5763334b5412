"""AMPTrainer, the quick start's path on AMX CPUs and on GPUs: a step trains, GN stays float32 inside, scaler state resumes."""

import pytest
import torch

from detgn.engine.train_loop import AMPTrainer
from detgn.layers.norm import FP32StatsGroupNorm
from detgn.modeling import build_model

from ..modeling.util import make_inputs, small_gn_cfg
from tests.util import endless

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
needs_cpu_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="this CPU has no bf16 support in oneDNN (bf16 convolutions would take minutes)",
)


def _small_model(device="cpu"):
    cfg = small_gn_cfg()
    cfg.MODEL.DEVICE = device
    torch.manual_seed(0)
    return build_model(cfg)


def _loader():
    return endless(lambda: [make_inputs(height=96, width=128, seed=0)])


def _step(dtype, device):
    model = _small_model(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    trainer = AMPTrainer(model, _loader(), torch.optim.SGD(params, lr=0.01), dtype=dtype, device_type=device)
    trainer.train(0, 1)
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    return trainer, changed, len(params)


@needs_cpu_bf16
def test_bf16_cpu_step_changes_the_weights():
    trainer, changed, total = _step("bfloat16", "cpu")
    assert trainer.runner.grad_scaler is None
    assert changed >= 0.9 * total, f"only {changed} of {total} parameters changed"
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32


def test_group_norm_statistics_in_float32_under_autocast():
    torch.manual_seed(0)
    gn = FP32StatsGroupNorm(4, 16)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.normal_()
    x = (torch.randn(2, 16, 9, 9) * 50 + 1000).to(torch.bfloat16)  # large mean: bf16 statistics would be off
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = gn(x)
    ref = torch.nn.functional.group_norm(x.float(), 4, gn.weight, gn.bias, gn.eps)
    assert y.dtype == torch.bfloat16
    assert (
        y.float() - ref
    ).abs().max().item() <= 2**-7 * ref.abs().max().item() + 1e-2  # one bf16 rounding of the output


@needs_cuda
def test_fp16_cuda_step_and_grad_scaler_resume():
    trainer, changed, total = _step("float16", "cuda")
    assert changed > 0
    state = trainer.state_dict()
    assert "grad_scaler" in state["loop"] and state["loop"]["grad_scaler"]["scale"] > 0
    model = _small_model("cuda").train()
    other = AMPTrainer(
        model, _loader(), torch.optim.SGD(model.parameters(), lr=0.01), dtype="float16", device_type="cuda"
    )
    state["loop"]["grad_scaler"]["scale"] = 1234.0
    other.load_state_dict(state)
    assert other.runner.grad_scaler.get_scale() == 1234.0
