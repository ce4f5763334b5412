"""Precision policy: which autocast dtype (if any) a run uses, chosen from the config and the hardware.

SOLVER.AMP.ENABLED False -> float32 everywhere. With ENABLED True, SOLVER.AMP.DTYPE says:

  "auto"      CPU: bfloat16 where the CPU computes bf16 natively and it makes the step faster, else float32:
                - AMX tiles (usable by oneDNN): bf16, several times faster per convolution;
                - AVX-512-BF16 without AMX (AMD Zen 4/5, Intel Cooper Lake): bf16 is faster on some of these CPUs
                  and slower on others, so a bf16 and an fp32 training step of a small GN conv net are timed once
                  per CPU kind and the decision is cached (like cudnn.benchmark; cpu_bf16_decision);
                - neither (AVX2 only, or oneDNN capped below them by ONEDNN_MAX_CPU_ISA): float32, bf16 is emulated
                  there, ~200x slower per convolution.
              CUDA: bfloat16 where `torch.cuda.is_bf16_supported()`, else float16 (with loss scaling).
  "bfloat16"  as asked; where "auto" would pick float32 on a CPU, a WARNING names the expected slowdown
              (figures in docs/benchmarks.md). Refused on a CUDA device without bf16.
  "float16"   CUDA only, with a GradScaler; refused on CPU.

`torch.ops.mkldnn._is_mkldnn_bf16_supported()` alone is not the test: it is True on any AVX-512 CPU, where oneDNN may
run bf16 convolutions by emulation, slower than fp32.

GroupNorm statistics stay in float32 under every autocast dtype (layers/norm.py).
"""

import json
import logging
import os
import statistics
import time
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from detgn.utils.errors import ConfigValueError

__all__ = [
    "Precision",
    "resolve_precision",
    "resolve_inference_precision",
    "log_precision",
    "cpu_bf16_is_fast",
    "cpu_bf16_decision",
    "cpu_bf16_units",
    "cpu_kind",
    "measure_bf16_speedup",
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


# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) that allow its AMX and its AVX-512-BF16 kernels
_ONEDNN_AMX = {"AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT"}
_ONEDNN_BF16 = _ONEDNN_AMX | {"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512"}


def _onednn_allows(isas) -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "ALL")).strip().upper() or "ALL"
    return cap in isas


def cpu_bf16_units() -> Optional[str]:
    """ "AMX", "AVX512_BF16" or None: the native bf16 units oneDNN may use on this CPU (the CPU's flags, capped by
    ONEDNN_MAX_CPU_ISA)."""
    try:
        mkldnn_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        mkldnn_bf16 = False
    if not mkldnn_bf16:
        return None
    if _cpu_flag("_is_amx_tile_supported") and _onednn_allows(_ONEDNN_AMX):
        return "AMX"
    if _cpu_flag("_is_avx512_bf16_supported") and _onednn_allows(_ONEDNN_BF16):
        return "AVX512_BF16"
    return None


def _cache_path() -> str:
    explicit = os.environ.get("DETGN_PRECISION_CACHE")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "detgn", "cpu_precision.json")


def cpu_kind() -> str:
    """What the bf16 decision depends on: CPU model and units, the dispatch caps, torch's version and threads."""
    caps = ",".join(f"{k}={os.environ[k]}" for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ)
    return f"{cpu_model()} | {cpu_description()} | {caps or 'native'} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _read_cache(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # absent, unreadable or not JSON: measured again and rewritten


def measure_bf16_speedup(repeats: int = 5) -> Tuple[float, float]:
    """Median seconds of a training step (forward + backward) of a small GN conv net in fp32 and under bf16 autocast,
    interleaved: (fp32, bf16). The net is shaped like the quick start's heads (128-channel 3x3 convs with GN + ReLU on
    2 x 64x64 maps, then a linear layer); 2-5 s on a 2-core CPU."""
    from torch import nn

    g = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(3):
        layers += [nn.Conv2d(128, 128, 3, padding=1, bias=False), nn.GroupNorm(32, 128), nn.ReLU()]
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(128 * 64, 256))
    x = torch.randn(2, 128, 64, 64, generator=g)

    def step(bf16: bool) -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(x)
        y.float().square().mean().backward()
        net.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step(False), step(True)  # warm-up: oneDNN builds its kernels
    times = {False: [], True: []}
    for _ in range(repeats):
        for bf16 in (False, True):
            times[bf16].append(step(bf16))
    return statistics.median(times[False]), statistics.median(times[True])


def cpu_bf16_decision() -> Tuple[bool, str]:
    """(bf16 is the faster choice on this CPU, why): AMX -> yes; no native bf16 units -> no; AVX-512-BF16 without AMX
    -> measured once per cpu_kind() (measure_bf16_speedup; bf16 when at least 10% faster) and cached in
    ~/.cache/detgn/cpu_precision.json (DETGN_PRECISION_CACHE names another file)."""
    units = cpu_bf16_units()
    if units is None:
        return False, f"this CPU has no native bf16 units that oneDNN uses ({cpu_description()})"
    if units == "AMX":
        return True, f"this CPU multiplies bf16 natively on AMX units ({cpu_description()})"
    path, kind = _cache_path(), cpu_kind()
    entry = _read_cache(path).get(kind)
    if isinstance(entry, dict) and isinstance(entry.get("bf16"), bool):
        how = f"measured on this CPU kind earlier, cached in {path}"
    else:
        fp32_s, bf16_s = measure_bf16_speedup()
        entry = {"bf16": bf16_s < 0.9 * fp32_s, "fp32_s": round(fp32_s, 5), "bf16_s": round(bf16_s, 5)}
        how = f"measured now, cached in {path}"
        try:
            from detgn.utils.atomic import atomic_write_text

            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            data = _read_cache(path)
            data[kind] = entry
            atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
        except OSError as e:
            how = f"measured now; not cached ({path}: {e.strerror})"
    verdict = "faster" if entry["bf16"] else "not faster"
    return entry["bf16"], (
        f"AVX-512-BF16 without AMX ({cpu_description()}): a bf16 step took {entry.get('bf16_s', float('nan')):.4g} s, "
        f"fp32 {entry.get('fp32_s', float('nan')):.4g} s, so bf16 is {verdict} here ({how})"
    )


def cpu_bf16_is_fast() -> bool:
    """True where bf16 autocast makes a training step faster on this CPU (cpu_bf16_decision)."""
    return cpu_bf16_decision()[0]


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
        fast, why = cpu_bf16_decision() if dtype != "float16" else (False, "")
        if dtype == "float16":
            raise ConfigValueError(
                "SOLVER.AMP.DTYPE float16 is CUDA only; on CPU use 'auto' (bf16 where the CPU has AMX, "
                "else fp32) or set SOLVER.AMP.ENABLED False"
            )
        if dtype == "auto":
            if fast:
                return Precision(torch.bfloat16, "cpu", f"SOLVER.AMP.DTYPE auto: {why}")
            return Precision(None, "cpu", f"SOLVER.AMP.DTYPE auto: {why}; bf16 autocast is slower than fp32 here")
        reason = "SOLVER.AMP.DTYPE bfloat16 as requested"
        if not fast:
            reason += (
                f"; WARNING: {why}: expect bf16 steps slower than fp32 (~200x per convolution where bf16 is "
                "emulated); SOLVER.AMP.DTYPE auto picks fp32 here"
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
