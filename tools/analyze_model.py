#!/usr/bin/env python
"""Parameter counts, FLOPs (fvcore), activation counts and structure of a model.

    python tools/analyze_model.py --config-file CFG --tasks parameter flop activation structure \
        [--size H --max-size W] [--detections N] [--depth 3] [KEY VALUE ...]

FLOPs and activations are counted by fvcore on one synthetic image in inference mode (a fused
multiply-add counts as one flop, fvcore's convention). The image is H x W pixels, by default
INPUT.MIN_SIZE_TEST x INPUT.MAX_SIZE_TEST of the config (the largest input its test-time resize
makes). The ROI heads run on --detections boxes per image (default TEST.DETECTIONS_PER_IMAGE): the
score threshold is set to 0 for the count, so the mask head is counted on that many detections, as
on a busy image, instead of on whatever an untrained model happens to keep. Table rows are module
paths of the model (backbone.bottom_up.res2, roi_heads.mask_head, ...).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inference_graph(model):
    """A module whose children are the model's own (so fvcore's rows are the model's module paths)
    and whose forward is the model's inference on one image tensor -> (boxes, scores, mask logits)."""
    import torch

    class InferenceGraph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in model.named_children():
                self.add_module(name, child)

        def forward(self, image):
            out = model.inference([{"image": image}], do_postprocess=False)[0]
            extra = (out.pred_masks,) if out.has("pred_masks") else ()
            return (out.pred_boxes.tensor, out.scores) + extra

    return InferenceGraph()


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    ap.add_argument(
        "--tasks",
        nargs="+",
        default=["parameter"],
        choices=["parameter", "flop", "activation", "structure"],
        help="what to report",
    )
    ap.add_argument("--size", type=int, default=None, help="input height in pixels (default INPUT.MIN_SIZE_TEST)")
    ap.add_argument("--max-size", type=int, default=None, help="input width in pixels (default INPUT.MAX_SIZE_TEST)")
    ap.add_argument(
        "--detections",
        type=int,
        default=None,
        help="boxes per image through the ROI heads (default TEST.DETECTIONS_PER_IMAGE)",
    )
    ap.add_argument("--depth", type=int, default=3, help="module depth of the tables")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    import torch
    from fvcore.nn import ActivationCountAnalysis, FlopCountAnalysis, flop_count_table, parameter_count_table

    from detgn.jobs import setup_cfg_or_exit
    from detgn.modeling import build_model

    cfg = setup_cfg_or_exit(args)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    height = args.size or cfg.INPUT.MIN_SIZE_TEST
    width = args.max_size or cfg.INPUT.MAX_SIZE_TEST
    detections = cfg.TEST.DETECTIONS_PER_IMAGE if args.detections is None else args.detections
    cfg.TEST.DETECTIONS_PER_IMAGE = detections
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    if "parameter" in args.tasks:
        print(parameter_count_table(model, max_depth=args.depth))
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"parameters: {total:,} total, {trainable:,} trainable")
    if "structure" in args.tasks:
        print(model)
    if "flop" in args.tasks or "activation" in args.tasks:
        image = torch.randint(0, 256, (3, height, width), dtype=torch.uint8)
        graph = _inference_graph(model)
        with torch.no_grad():
            kept = len(graph(image)[0])
        where = f"{height}x{width} (height x width)"
        heads = (
            f"ROI heads on {kept} detections (TEST.DETECTIONS_PER_IMAGE {detections}, score threshold 0 for the count)"
        )
        if "flop" in args.tasks:
            flops = FlopCountAnalysis(graph, (image,)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            print(flop_count_table(flops, max_depth=args.depth))
            print(f"total GFLOPs at {where}: {flops.total() / 1e9:.2f}; {heads}")
        if "activation" in args.tasks:
            acts = (
                ActivationCountAnalysis(graph, (image,))
                .unsupported_ops_warnings(False)
                .uncalled_modules_warnings(False)
            )
            print(f"total activations (M) at {where}: {acts.total() / 1e6:.2f}; {heads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
