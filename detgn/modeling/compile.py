"""torch.compile for the parts of a detector whose inputs are plain tensors (MODEL.COMPILE).

Parts: "backbone" (ResNet + FPN: images -> feature maps), "box_head" (the ROI box tower: pooled ROIs ->
features) and "mask_head" (the mask tower and its deconvolution and predictor: pooled ROIs -> mask logits; the loss
and inference stay eager). The proposal generator and ROI sampling are not compiled: their shapes change with
the data every step, and most of their time is NMS and indexing.

Compiled in place (`nn.Module.compile` / a compiled bound method), so parameter names, checkpoints and
DDP wrapping are unchanged. The first steps pay the compilation (and one recompilation when shapes first
change; `dynamic=None` then marks the changing dimensions dynamic); tools/benchmark.py reports it apart
from the step time.

Inductor's on-disk cache (TORCHINDUCTOR_CACHE_DIR, default /tmp/torchinductor_<user>) does not key its CPU
kernels on ATEN_CPU_CAPABILITY: kernels built by a native run and loaded by a run under
`ATEN_CPU_CAPABILITY=avx2` gave wrong values and NaN gradients (torch 2.14.1, docs/benchmarks.md). So when that
variable is set and no cache folder is chosen, compile_parts uses a folder of its own per capability.
"""

import logging
import os
from typing import Sequence

from torch import nn

from detgn.utils.errors import ConfigValueError

__all__ = ["PARTS", "compile_parts"]

PARTS = ("backbone", "box_head", "mask_head")
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
BACKENDS = ("inductor", "aot_eager", "eager")


def _part(model: nn.Module, name: str) -> nn.Module:
    owner = model if name == "backbone" else getattr(model, "roi_heads", None)
    module = getattr(owner, name, None) if owner is not None else None
    if module is None:
        raise ConfigValueError(
            f"MODEL.COMPILE.PARTS names '{name}', which this model ({type(model).__name__}) does not have; "
            f"remove it (parts: {', '.join(PARTS)})"
        )
    return module


def compile_parts(
    model: nn.Module, parts: Sequence[str], mode: str = "default", backend: str = "inductor"
) -> nn.Module:
    """Compile `parts` of `model` in place with torch.compile; returns `model`.

    Args:
        parts: names from PARTS; empty = nothing compiled.
        mode, backend: torch.compile's (MODEL.COMPILE.MODE, MODEL.COMPILE.BACKEND).
    """
    for name in parts:
        if name not in PARTS:
            raise ConfigValueError(f"MODEL.COMPILE.PARTS: unknown part '{name}'; choose from {', '.join(PARTS)}")
    kwargs = dict(backend=backend, dynamic=None)
    if backend == "inductor":
        kwargs["mode"] = mode
    elif mode != "default":
        raise ConfigValueError(
            f"MODEL.COMPILE.MODE '{mode}' applies to the inductor backend only (MODEL.COMPILE.BACKEND is '{backend}')"
        )
    import torch

    if parts and backend == "inductor":
        _separate_inductor_cache()
    for name in parts:
        module = _part(model, name)
        if isinstance(module, torch.nn.ModuleList):  # Cascade: one box tower per stage
            for stage in module:
                stage.compile(**kwargs)
        elif name == "mask_head" and hasattr(module, "layers"):
            # the tower only: forward() also computes the loss / pastes masks on Instances
            module.layers = torch.compile(module.layers, **kwargs)
        else:
            module.compile(**kwargs)
    if parts:
        logging.getLogger(__name__).info(
            "torch.compile (%s, mode %s): %s; the first iterations include compilation", backend, mode, ", ".join(parts)
        )
    return model


def _separate_inductor_cache() -> None:
    """Point inductor at <default cache>-<capability> when ATEN_CPU_CAPABILITY is set and the user chose no folder."""
    capability = os.environ.get("ATEN_CPU_CAPABILITY")
    if not capability or "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = f"{default_cache_dir()}-{capability}"
    logging.getLogger(__name__).info(
        "ATEN_CPU_CAPABILITY=%s: inductor's cache is %s (kernels of other capabilities are not reused)",
        capability,
        os.environ["TORCHINDUCTOR_CACHE_DIR"],
    )
