"""Device tests: run on CUDA when available (or DETGN_TEST_DEVICE=cuda), else skipped; CPU variants always run."""

import os

import pytest
import torch

from detgn.layers.mask_ops import paste_masks_in_image
from detgn.modeling import build_model

from .util import gn_cfg, make_inputs, small_gn_cfg

DEVICE = os.environ.get("DETGN_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def _model(device):
    """The R50 GN model on CUDA; its narrow ResNet-18 version on the CPU, where bf16 autocast is emulated
    (and ~100x slower than float32) on CPUs without native bf16, such as AVX2-only ones."""
    torch.manual_seed(0)
    cfg = gn_cfg() if device != "cpu" else small_gn_cfg()
    cfg.MODEL.DEVICE = device
    return build_model(cfg)


@pytest.mark.parametrize("amp", [None, torch.bfloat16])
def test_train_step_on_device(amp):
    model = _model(DEVICE).train()
    with torch.autocast(device_type=DEVICE, dtype=amp or torch.float32, enabled=amp is not None):
        losses = model([make_inputs(seed=0), make_inputs(seed=1, with_gt=False)])
    assert all(v.device.type == DEVICE and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@needs_cuda
def test_fp16_step_with_scaler_on_cuda():
    model = _model("cuda").train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = sum(model([make_inputs(seed=0)]).values())
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)


def test_inference_outputs_on_device():
    model = _model(DEVICE).eval()
    with torch.no_grad():
        out = model([{"image": make_inputs(seed=3)["image"], "height": 200, "width": 250}])[0]["instances"]
    assert out.pred_boxes.tensor.device.type == DEVICE and out.pred_masks.device.type == DEVICE
    assert out.pred_masks.shape[1:] == (200, 250)


@needs_cuda
def test_paste_masks_cuda_matches_cpu():
    torch.manual_seed(0)
    masks = torch.rand(50, 1, 28, 28)
    boxes = torch.rand(50, 4) * 300
    boxes[:, 2:] = boxes[:, :2] + 20 + torch.rand(50, 2) * 100
    a = paste_masks_in_image(masks, boxes, (480, 640))
    b = paste_masks_in_image(masks.cuda(), boxes.cuda(), (480, 640)).cpu()
    assert (a != b).float().mean() < 1e-4


@needs_cuda
def test_cpu_and_cuda_models_agree():
    cpu = _model("cpu").eval()
    gpu = _model("cuda").eval()
    gpu.load_state_dict(cpu.state_dict())
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    inp = {"image": make_inputs(seed=4)["image"]}
    with torch.no_grad():
        fa = cpu.backbone(cpu.preprocess_image([inp]).tensor)
        fb = gpu.backbone(gpu.preprocess_image([inp]).tensor)
    for k in fa:
        torch.testing.assert_close(fb[k].cpu(), fa[k], rtol=1e-3, atol=1e-3)


def test_loaders_pin_memory_only_for_cuda(monkeypatch):
    """Batches are page-locked when the model runs on CUDA (async host-to-device copies), never on the CPU."""
    from detgn.config import get_cfg
    from detgn.data.build import build_detection_test_loader, build_detection_train_loader

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "nuclei_quickstart.yaml"))
    cfg.DATALOADER.NUM_WORKERS = 0
    assert (
        not build_detection_train_loader(cfg).pin_memory
        and not build_detection_test_loader(cfg, "nuclei_mini_val").pin_memory
    )
    cfg.MODEL.DEVICE = "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert (
        build_detection_train_loader(cfg).pin_memory and build_detection_test_loader(cfg, "nuclei_mini_val").pin_memory
    )


@needs_cuda
def test_pinned_batches_reach_the_gpu():
    from detgn.config import get_cfg
    from detgn.data.build import build_detection_train_loader

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(os.path.dirname(__file__), "..", "..", "configs", "nuclei_quickstart.yaml"))
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.MODEL.DEVICE = "cuda"
    batch = next(iter(build_detection_train_loader(cfg)))
    assert all(d["image"].is_pinned() for d in batch)
