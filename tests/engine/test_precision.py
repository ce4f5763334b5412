"""Precision policy: autocast dtype from SOLVER.AMP.* and the hardware, with the probes patched both ways."""

import json
import logging
import os

import pytest
import torch

from detgn.config import get_cfg
from detgn.engine import precision as P
from detgn.engine.step_runner import AMPStepRunner, StepRunner

from tests.util import REPO


@pytest.fixture
def amx(monkeypatch, tmp_path):
    """Patch the CPU probes: amx(True) = an AMX CPU, amx(False) = AVX-512/AVX2 without AMX or AVX-512-BF16."""
    monkeypatch.setenv("DETGN_PRECISION_CACHE", str(tmp_path / "cpu_precision.json"))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    def set_(has_amx: bool):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: has_amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: has_amx)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)

    return set_


def test_probe_needs_native_bf16_units(monkeypatch, tmp_path):
    monkeypatch.setenv("DETGN_PRECISION_CACHE", str(tmp_path / "cache.json"))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda: pytest.fail("AMX or no bf16 units: nothing to measure"))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert P.cpu_bf16_units() == "AMX" and P.cpu_bf16_is_fast()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN capped below its bf16 kernels: emulated
    assert P.cpu_bf16_units() is None and not P.cpu_bf16_is_fast()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # AVX-512-BF16 kernels, no AMX
    assert P.cpu_bf16_units() == "AVX512_BF16"
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert P.cpu_bf16_units() is None and not P.cpu_bf16_is_fast()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # AVX-512 or AVX2 only
    assert P.cpu_bf16_units() is None and not P.cpu_bf16_is_fast()


@pytest.mark.parametrize("fp32_s, bf16_s, picks_bf16", [(0.40, 0.29, True), (0.30, 0.40, False), (0.30, 0.28, False)])
def test_avx512_bf16_without_amx_is_measured_once_per_cpu_kind(monkeypatch, tmp_path, fp32_s, bf16_s, picks_bf16):
    """Zen 4/5-like CPU (AVX-512-BF16, no AMX): one timed step each way decides (bf16 when >= 10% faster), and the
    decision is cached for this CPU kind; another kind (a dispatch cap) is measured again; a broken cache is rewritten."""
    cache = tmp_path / "sub" / "cpu_precision.json"
    monkeypatch.setenv("DETGN_PRECISION_CACHE", str(cache))
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    runs = []
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda: runs.append(1) or (fp32_s, bf16_s))
    first = P.resolve_precision(True, "auto", "cpu")
    assert (first.dtype == torch.bfloat16) == picks_bf16 and "measured now, cached in" in first.reason
    again = P.resolve_precision(True, "auto", "cpu")
    assert again.dtype == first.dtype and "measured on this CPU kind earlier" in again.reason and len(runs) == 1
    assert json.loads(cache.read_text())[P.cpu_kind()]["bf16"] is picks_bf16
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    P.resolve_precision(True, "auto", "cpu")
    assert len(runs) == 2 and len(json.loads(cache.read_text())) == 2
    cache.write_text("{not json")
    P.resolve_precision(True, "auto", "cpu")
    assert len(runs) == 3 and json.loads(cache.read_text())[P.cpu_kind()]["bf16"] is picks_bf16


def test_the_measurement_times_both_precisions():
    fp32_s, bf16_s = P.measure_bf16_speedup(repeats=1)
    assert fp32_s > 0 and bf16_s > 0


def test_auto_on_cpu_follows_the_hardware(amx):
    amx(True)
    p = P.resolve_precision(True, "auto", "cpu")
    assert p.dtype == torch.bfloat16 and "natively" in p.reason and not p.needs_grad_scaler
    amx(False)
    p = P.resolve_precision(True, "auto", "cpu")
    assert p.dtype is None and p.name == "float32" and "no native bf16 units" in p.reason


def test_disabled_is_float32_everywhere(amx):
    amx(True)
    for device in ("cpu", "cuda"):
        p = P.resolve_precision(False, "auto", device)
        assert p.dtype is None and "ENABLED is False" in p.reason


def test_explicit_bf16_on_cpu_without_amx_warns(amx, caplog):
    amx(False)
    p = P.resolve_precision(True, "bfloat16", "cpu")
    assert p.dtype == torch.bfloat16  # honoured, but the user is told what it costs
    with caplog.at_level(logging.INFO, logger="detgn.engine.precision"):
        P.log_precision(p)
    rec = [r for r in caplog.records if r.name == "detgn.engine.precision"]
    assert len(rec) == 1 and rec[0].levelno == logging.WARNING and "slower than fp32" in rec[0].getMessage()
    amx(True)
    p = P.resolve_precision(True, "bfloat16", "cpu")
    assert p.dtype == torch.bfloat16 and "WARNING" not in p.reason


def test_auto_logs_one_info_line(amx, caplog):
    amx(False)
    with caplog.at_level(logging.INFO, logger="detgn.engine.precision"):
        P.log_precision(P.resolve_precision(True, "auto", "cpu"))
    rec = [r for r in caplog.records if r.name == "detgn.engine.precision"]
    assert len(rec) == 1 and rec[0].levelno == logging.INFO and "float32" in rec[0].getMessage()


def test_refused_combinations(amx):
    amx(True)
    with pytest.raises(ValueError, match="float16 is CUDA only"):
        P.resolve_precision(True, "float16", "cpu")
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE must be"):
        P.resolve_precision(True, "fp16", "cpu")
    with pytest.raises(ValueError, match="SOLVER.AMP.DTYPE must be"):
        P.resolve_precision(False, "half", "cpu")  # a typo is refused even when AMP is off


def test_cuda_policy(monkeypatch):
    monkeypatch.setattr(P, "_cuda_bf16_supported", lambda: True)
    assert P.resolve_precision(True, "auto", "cuda").dtype == torch.bfloat16
    assert P.resolve_precision(True, "float16", "cuda").needs_grad_scaler
    monkeypatch.setattr(P, "_cuda_bf16_supported", lambda: False)
    p = P.resolve_precision(True, "auto", "cuda")
    assert p.dtype == torch.float16 and p.needs_grad_scaler
    with pytest.raises(ValueError, match="does not support bf16"):
        P.resolve_precision(True, "bfloat16", "cuda")


def test_autocast_context_is_off_for_float32():
    p = P.Precision(None, "cpu", "test")
    with P.autocast(p):
        y = torch.nn.functional.linear(torch.randn(2, 3), torch.randn(4, 3))
    assert y.dtype == torch.float32


def test_quickstart_config_uses_the_automatic_choice(amx, tmp_path):
    """configs/nuclei_quickstart.yaml asks for "auto"; the trainer it builds follows the probe."""
    from detgn.engine import DefaultTrainer

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "nuclei_quickstart.yaml"))
    assert cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.DTYPE == "auto"
    cfg.OUTPUT_DIR = str(tmp_path)
    trainer = DefaultTrainer(cfg)
    amx(True)
    t = trainer.build_step_runner(trainer.model, loader=[])
    assert isinstance(t, AMPStepRunner) and t.dtype == torch.bfloat16 and t.grad_scaler is None
    amx(False)
    t = trainer.build_step_runner(trainer.model, loader=[])
    assert type(t) is StepRunner
