"""Does a compiled box head still compute what eager does? Prints the relative max difference of the outputs and of
the input gradients (compiled channels_last model vs eager NCHW), for the inductor cache folder in use.

    rm -rf /tmp/c; TORCHINDUCTOR_CACHE_DIR=/tmp/c python benchmarks/inductor_isa_cache.py
    TORCHINDUCTOR_CACHE_DIR=/tmp/c ATEN_CPU_CAPABILITY=avx2 python benchmarks/inductor_isa_cache.py   # reuses the first run's kernels

With torch 2.14.1 the second line printed 1.4e7 / nan: inductor reused kernels built without the capability
override (docs/benchmarks.md). Without TORCHINDUCTOR_CACHE_DIR, detgn's compile_parts separates the caches.
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detgn.config import get_cfg  # noqa: E402
from detgn.modeling import build_model  # noqa: E402


def main():
    cfg = get_cfg()
    cfg.merge_from_file(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "nuclei_quickstart.yaml")
    )
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(0)
    eager = build_model(cfg)
    cfg.MODEL.MEMORY_FORMAT = "channels_last"
    cfg.MODEL.COMPILE.PARTS = ["box_head"]
    compiled = build_model(cfg)
    compiled.load_state_dict(eager.state_dict())
    x = torch.randn(24, cfg.MODEL.FPN.OUT_CHANNELS, 7, 7, generator=torch.Generator().manual_seed(1))
    outs = []
    for model in (eager, compiled):
        xi = x.clone() if model is eager else x.clone().contiguous(memory_format=torch.channels_last)
        xi.requires_grad_()
        y = model.roi_heads.box_head(xi)
        y.backward(torch.ones_like(y))
        outs.append((y, xi.grad))
    rel = [((a - b).abs().max() / a.abs().max()).item() for a, b in zip(*outs)]
    print(
        f"cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR')}, ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(unset)')}: "
        f"outputs {rel[0]:.2g}, input gradients {rel[1]:.2g} (relative max difference, compiled channels_last vs eager NCHW)"
    )


if __name__ == "__main__":
    main()
