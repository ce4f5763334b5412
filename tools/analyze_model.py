#!/usr/bin/env python
"""Parameter counts, FLOPs (fvcore), activation counts and structure of a model.

    python tools/analyze_model.py --config-file CFG --tasks parameter flop activation structure \
        [--size 800 --max-size 1333] [--depth 3] [KEY VALUE ...]

FLOPs and activations are counted by fvcore on one synthetic image of the given size in
inference mode (a fused multiply-add counts as one flop, fvcore's convention).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    ap.add_argument("--tasks", nargs="+", default=["parameter"], choices=["parameter", "flop", "activation", "structure"],
                    help="what to report")
    ap.add_argument("--size", type=int, default=800, help="input short side (height) in pixels")
    ap.add_argument("--max-size", type=int, default=1333, help="input long side (width) in pixels")
    ap.add_argument("--depth", type=int, default=3, help="module depth of the tables")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    args = ap.parse_args(argv)
    import torch
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, flop_count_table, parameter_count_table

    from detgn.engine import setup_cfg_or_exit
    from detgn.modeling import build_model

    cfg = setup_cfg_or_exit(args)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg).eval()
    if "parameter" in args.tasks:
        print(parameter_count_table(model, max_depth=args.depth))
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"parameters: {total:,} total, {trainable:,} trainable")
    if "structure" in args.tasks:
        print(model)
    if "flop" in args.tasks or "activation" in args.tasks:
        torch.manual_seed(0)
        image = torch.randint(0, 256, (3, args.size, args.max_size), dtype=torch.uint8)

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, img):
                out = self.m.inference([{"image": img}], do_postprocess=False)[0]
                return out.pred_boxes.tensor, out.scores

        wrapper = Wrapper(model)
        if "flop" in args.tasks:
            flops = FlopCountAnalysis(wrapper, (image,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            print(flop_count_table(flops, max_depth=args.depth))
            print(f"total GFLOPs at {args.size}x{args.max_size}: {flops.total() / 1e9:.2f}")
        if "activation" in args.tasks:
            acts = ActivationCountAnalysis(wrapper, (image,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            print(f"total activations (M) at {args.size}x{args.max_size}: {acts.total() / 1e6:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
