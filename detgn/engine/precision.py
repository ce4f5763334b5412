"""Precision policy: which autocast dtype (if any) a run uses, chosen from the config and the hardware.

SOLVER.AMP.ENABLED False -> float32 everywhere. With ENABLED True, SOLVER.AMP.DTYPE says:

  "auto"      CPU: bfloat16 where the CPU multiplies bf16 natively (AMX tiles), else float32.
              CUDA: bfloat16 where `torch.cuda.is_bf16_supported()`, else float16 (with loss scaling).
  "bfloat16"  as asked; on a CPU without AMX a WARNING names the expected slowdown (bf16 is
              emulated there: slower per training step with AVX-512-BF16 and no AMX, and far slower per
              convolution with AVX2 only; figures in docs/benchmarks.md). Refused on a CUDA device without bf16.
  "float16"   CUDA only, with a GradScaler; refused on CPU.

Why AMX and not `torch.ops.mkldnn._is_mkldnn_bf16_supported()`: that probe is True on any AVX-512
CPU, where oneDNN runs bf16 convolutions by emulation, slower than fp32; with AMX bf16 makes the
training step several times faster (the measurements, their commands and machines: docs/benchmarks.md).

GroupNorm statistics stay in float32 under every autocast dtype (layers/norm.py).
"""

import logging
from dataclasses import dataclass
from typing import Optional

import torch

from detgn.utils.errors import ConfigValueError

__all__ = [
    "Precision",
    "resolve_precision",
    "resolve_inference_precision",
    "log_precision",
    "cpu_bf16_is_fast",
    "cpu_model",
    "cpu_description",
    "autocast",
]

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """The chosen precision: `dtype` is the autocast dtype, None for float32; `reason` is one sentence."""

    dtype: Optional[torch.dtype]
    device_type: str
    reason: str

    @property
    def name(self) -> str:
        return "float32" if self.dtype is None else str(self.dtype).replace("torch.", "")

    @property
    def needs_grad_scaler(self) -> bool:
        return self.dtype == torch.float16


def _cpu_flag(name: str) -> bool:
    probe = getattr(torch.cpu, name, None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def cpu_bf16_is_fast() -> bool:
    """True where bf16 convolutions and matmuls run on AMX tiles (oneDNN bf16 enabled and AMX present)."""
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = False
    return mkldnn_bf16 and _cpu_flag("_is_amx_tile_supported")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def cpu_description() -> str:
    """Short summary of the CPU's vector units, e.g. 'AVX512, avx512_bf16, no AMX'."""
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        cap = "unknown"
    parts = [cap]
    parts.append("avx512_bf16" if _cpu_flag("_is_avx512_bf16_supported") else "no avx512_bf16")
    parts.append("AMX" if _cpu_flag("_is_amx_tile_supported") else "no AMX")
    return ", ".join(parts)


def _cuda_bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_precision(enabled: bool, dtype: str, device_type: str) -> Precision:
    """The autocast dtype for SOLVER.AMP.ENABLED / SOLVER.AMP.DTYPE on `device_type` ("cpu" or "cuda").

    Raises ValueError (one line) for a combination that cannot run: fp16 on CPU, bf16 on a GPU
    without it, or an unknown DTYPE. Logs nothing; `log_precision` does.
    """
    if dtype not in ("auto", "float16", "bfloat16"):
        raise ConfigValueError(f"SOLVER.AMP.DTYPE must be 'auto', 'float16' or 'bfloat16', got '{dtype}'")
    if not enabled:
        return Precision(None, device_type, "SOLVER.AMP.ENABLED is False")
    if device_type == "cpu":
        fast = cpu_bf16_is_fast()
        if dtype == "float16":
            raise ConfigValueError(
                "SOLVER.AMP.DTYPE float16 is CUDA only; on CPU use 'auto' (bf16 where the CPU has AMX, "
                "else fp32) or set SOLVER.AMP.ENABLED False"
            )
        if dtype == "auto":
            if fast:
                return Precision(
                    torch.bfloat16,
                    "cpu",
                    f"SOLVER.AMP.DTYPE auto: this CPU multiplies bf16 natively on AMX units ({cpu_description()})",
                )
            return Precision(
                None,
                "cpu",
                f"SOLVER.AMP.DTYPE auto: this CPU has no AMX bf16 units ({cpu_description()}), "
                "where bf16 autocast is slower than fp32",
            )
        reason = "SOLVER.AMP.DTYPE bfloat16 as requested"
        if not fast:
            reason += (
                f"; WARNING: this CPU has no AMX bf16 units ({cpu_description()}): expect bf16 steps slower than fp32 "
                "(1.1-1.5x per step with AVX-512-BF16 and no AMX, ~200x per convolution with AVX2 only); "
                "SOLVER.AMP.DTYPE auto picks fp32 here"
            )
        return Precision(torch.bfloat16, "cpu", reason)
    if device_type == "cuda":
        if dtype == "auto":
            if _cuda_bf16_supported():
                return Precision(
                    torch.bfloat16, "cuda", "SOLVER.AMP.DTYPE auto: this GPU supports bf16 (no loss scaling needed)"
                )
            return Precision(
                torch.float16, "cuda", "SOLVER.AMP.DTYPE auto: this GPU has no bf16, using fp16 with loss scaling"
            )
        if dtype == "bfloat16" and not _cuda_bf16_supported():
            raise ConfigValueError("SOLVER.AMP.DTYPE bfloat16: this GPU does not support bf16; use 'auto' or 'float16'")
        return Precision(_DTYPES[dtype], "cuda", f"SOLVER.AMP.DTYPE {dtype} as requested")
    raise ValueError(f"autocast is supported on cpu and cuda, not '{device_type}'; set SOLVER.AMP.ENABLED False")


def resolve_inference_precision(enabled: bool, dtype: str, device_type: str) -> Precision:
    """The precision of evaluation, DefaultPredictor and tools/demo.py: bf16 autocast where the training
    policy picks bf16; float32 otherwise (fp16 is for training with loss scaling)."""
    p = resolve_precision(enabled, dtype, device_type)
    if p.needs_grad_scaler:
        return Precision(None, device_type, "fp16 is for training with loss scaling; inference runs in float32")
    return p


def log_precision(precision: Precision, what: str = "training") -> None:
    """One INFO line (a WARNING when the choice is expected to be slow) saying what was chosen and why."""
    level = logging.WARNING if "WARNING" in precision.reason else logging.INFO
    logger.log(level, "Precision for %s on %s: %s (%s)", what, precision.device_type, precision.name, precision.reason)


def autocast(precision: Precision):
    """The autocast context for `precision` (a disabled one for float32)."""
    if precision.dtype is None:
        return torch.autocast(device_type=precision.device_type, enabled=False)
    return torch.autocast(device_type=precision.device_type, dtype=precision.dtype)
