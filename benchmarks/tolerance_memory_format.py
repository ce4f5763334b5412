"""How far NCHW and channels_last (NHWC) gradients of the same model differ on this CPU: the
measurement behind the tolerances of tests/modeling/test_memory_format.py.

    python benchmarks/tolerance_memory_format.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/tolerance_memory_format.py   # as an AVX2 CPU

Prints, for the gradients the test compares, max |a - b| / max |a| between the layouts (float32),
and each layout's distance to a float64 reference of the backbone + RPN head.
"""

import copy
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.modeling.test_memory_format import _pair  # noqa: E402
from tests.modeling.util import make_inputs  # noqa: E402

NAMES = [
    "backbone.bottom_up.res3.0.conv1.weight",
    "backbone.bottom_up.res4.1.conv2.norm.weight",
    "backbone.fpn_output2.weight",
    "backbone.fpn_lateral5.weight",
    "proposal_generator.rpn_head.conv.weight",
]


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def rpn_grads(model, x):
    feats = model.backbone(x)
    objectness, deltas = model.proposal_generator.rpn_head([feats[f] for f in ("p2", "p3", "p4", "p5", "p6")])
    g = torch.Generator().manual_seed(3)
    sum((o * torch.randn(o.shape, generator=g).to(o.dtype)).sum() for o in objectness + deltas).backward()
    return {n: p.grad for n, p in model.named_parameters() if n in NAMES}


def main():
    torch.set_num_threads(2)
    from detgn.engine.precision import cpu_description, cpu_model

    print(
        f"CPU: {cpu_model()} ({cpu_description()}); ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '-')} "
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}; torch {torch.__version__}"
    )
    nchw, nhwc = _pair()
    batch = [make_inputs(seed=0), make_inputs(seed=1)]
    torch.manual_seed(5)
    la = nchw.train()(batch)
    torch.manual_seed(5)
    lb = nhwc.train()(batch)
    (la["loss_rpn_cls"] + la["loss_rpn_loc"]).backward()
    (lb["loss_rpn_cls"] + lb["loss_rpn_loc"]).backward()
    pa, pb = dict(nchw.named_parameters()), dict(nhwc.named_parameters())
    print("whole-model RPN losses, gradient NCHW vs NHWC (max rel):")
    for n in NAMES:
        print(f"  {n:<48} {rel(pb[n].grad, pa[n].grad):.1e}")
    nchw, nhwc = _pair()
    ref = copy.deepcopy(nchw).double()
    x = nchw.preprocess_image(batch).tensor
    ga, gb, gr = (
        rpn_grads(nchw, x),
        rpn_grads(nhwc, x.contiguous(memory_format=torch.channels_last)),
        rpn_grads(ref, x.double()),
    )
    print("backbone + RPN head on a random projection, distance to float64 (max rel): NCHW / NHWC")
    for n in NAMES:
        print(f"  {n:<48} {rel(ga[n], gr[n]):.1e} / {rel(gb[n], gr[n]):.1e}")


if __name__ == "__main__":
    main()
