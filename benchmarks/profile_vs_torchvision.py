"""Where a CPU training step goes, detgn vs torchvision's same GN Mask R-CNN: self time per operator.

    python benchmarks/profile_vs_torchvision.py [--size 512] [--steps 3]

The models, inputs and step of benchmarks/compare_torchvision.py (fp32, 2 images, 2 threads), two warm-up steps
each, then `--steps` profiled steps of each; prints s/step and the 40 largest operators side by side (ms per step).
"""

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.compare_torchvision import _make_steps, detgn_model  # noqa: E402
from benchmarks.peers import build_torchvision_gn_maskrcnn, synthetic_batch, to_detgn_inputs, to_torchvision_inputs  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--size", type=int, default=512)
ap.add_argument("--steps", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
batch = synthetic_batch(2, a.size, a.size)
d = detgn_model(a.size, "cpu")
tv = build_torchvision_gn_maskrcnn(80, min_size=a.size, score_thresh=0.0)
di = to_detgn_inputs(batch)
ti, tt = to_torchvision_inputs(batch, "cpu")
steps = {
    n: _make_steps(n, m, di, ti, tt, None, None, "cpu", "cpu")["train"] for n, m in (("detgn", d), ("torchvision", tv))
}
for n in steps:
    steps[n]()
    steps[n]()
tabs = {}
for n in steps:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(a.steps):
            steps[n]()
        print(n, (time.perf_counter() - t) / a.steps, "s/step profiled")
    tabs[n] = {e.key: e.self_cpu_time_total / (1e3 * a.steps) for e in prof.key_averages()}
keys = sorted(
    set(tabs["detgn"]) | set(tabs["torchvision"]),
    key=lambda k: -max(tabs["detgn"].get(k, 0), tabs["torchvision"].get(k, 0)),
)
print(f"{'op':50s} {'detgn ms':>9s} {'tv ms':>9s}")
for k in keys[:40]:
    print(f"{k[:50]:50s} {tabs['detgn'].get(k, 0):9.1f} {tabs['torchvision'].get(k, 0):9.1f}")
print("total", sum(tabs["detgn"].values()), sum(tabs["torchvision"].values()))
