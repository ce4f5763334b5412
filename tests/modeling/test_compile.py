"""MODEL.COMPILE: compiled parts compute what the eager NCHW model computes, and keep its checkpoints."""

import os

import pytest
import torch

from detgn.config.rules import check_config
from detgn.modeling import build_model
from detgn.utils.errors import ConfigValueError

from .util import make_inputs, small_gn_cfg
from tests.util import rel_close


def _pair(backend, parts=("backbone", "box_head", "mask_head"), memory_format="contiguous"):
    cfg = small_gn_cfg()
    torch.manual_seed(0)
    eager = build_model(cfg)
    cfg.MODEL.MEMORY_FORMAT = memory_format
    cfg.MODEL.COMPILE.PARTS = list(parts)
    cfg.MODEL.COMPILE.BACKEND = backend
    check_config(cfg)
    compiled = build_model(cfg)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def test_traced_model_trains_and_infers_like_eager():
    """Every part through dynamo + AOTAutograd (backend aot_eager: the graphs torch.compile builds, run
    without code generation): same losses, same backbone gradients, same detections, same state-dict keys."""
    torch._dynamo.reset()
    eager, compiled = _pair("aot_eager")
    assert list(compiled.state_dict()) == list(eager.state_dict())
    batch = [make_inputs(seed=0), make_inputs(seed=1)]
    losses = []
    for model in (eager, compiled):
        torch.manual_seed(5)
        out = model.train()(batch)
        (out["loss_rpn_cls"] + out["loss_rpn_loc"]).backward()
        losses.append(out)
    for k in losses[0]:
        assert rel_close(losses[0][k], losses[1][k]), (k, losses[0][k].item(), losses[1][k].item())
    for name in (
        "backbone.bottom_up.res3.0.conv1.weight",
        "backbone.fpn_output2.weight",
        "proposal_generator.rpn_head.conv.weight",
    ):
        a, b = dict(eager.named_parameters())[name].grad, dict(compiled.named_parameters())[name].grad
        assert rel_close(a, b), name
    x = {k: v for k, v in make_inputs(seed=3).items() if k != "instances"}
    with torch.no_grad():
        a = eager.eval()([x])[0]["instances"]
        b = compiled.eval()([x])[0]["instances"]
    assert len(a) == len(b) > 0 and torch.equal(a.pred_classes, b.pred_classes)
    assert rel_close(a.pred_boxes.tensor, b.pred_boxes.tensor) and rel_close(a.scores, b.scores)


@pytest.mark.slow  # inductor generates and compiles C++ (10-20 s on 2 cores)
def test_inductor_box_head_equals_eager(tmp_path, monkeypatch):
    """The real code generator on the 4conv1fc GN box tower of a channels_last model vs the eager NCHW one, at
    inference (compiling the backward as well doubles the time; the traced backward is checked above with
    aot_eager): outputs within 1e-4. A private inductor cache: kernels cached by another ATEN_CPU_CAPABILITY
    would be reused (test_an_isa_override_gets_its_own_inductor_cache)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    eager, compiled = _pair("inductor", parts=("box_head",), memory_format="channels_last")
    x = torch.randn(24, 64, 7, 7, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = eager.roi_heads.box_head(x)
        b = compiled.roi_heads.box_head(x.contiguous(memory_format=torch.channels_last))
    assert rel_close(a, b)
    assert compiled.roi_heads.box_head._compiled_call_impl is not None


def test_an_isa_override_gets_its_own_inductor_cache(monkeypatch):
    """Inductor reuses CPU kernels across ATEN_CPU_CAPABILITY settings (wrong values, NaN gradients in torch 2.14.1):
    with the variable set and no cache folder chosen, compiling moves the cache to a folder per capability;
    a folder the user chose is kept."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    from detgn.modeling.compile import compile_parts

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    model = build_model(small_gn_cfg())
    compile_parts(model, ["box_head"])  # lazy: nothing is compiled before the first call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == default_cache_dir() + "-avx2"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/somewhere/mine")
    compile_parts(model, ["mask_head"])
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/somewhere/mine"


def test_config_refuses_what_it_cannot_compile():
    cfg = small_gn_cfg()
    cfg.MODEL.COMPILE.PARTS = ["rpn"]
    with pytest.raises(
        ConfigValueError,
        match=r"MODEL.COMPILE.PARTS = \['rpn'\]: must be a list of 0 to 3 value\(s\), each one of 'backbone'",
    ):
        check_config(cfg)
    cfg.MODEL.COMPILE.PARTS = ["backbone"]
    cfg.MODEL.COMPILE.BACKEND = "eager"
    cfg.MODEL.COMPILE.MODE = "max-autotune"
    with pytest.raises(
        ConfigValueError,
        match=r"MODEL.COMPILE.MODE = 'max-autotune': must be 'default' with MODEL.COMPILE.BACKEND eager",
    ):
        check_config(cfg)
