#!/usr/bin/env python
"""Convert weights in any supported format to a detgn .pth and print the load report.

    python tools/convert_weights.py IN OUT [--config-file CFG] [KEY VALUE ...]

IN: Detectron (Caffe2) .pkl (ImageNet GN/BN ResNets or detection models), detectron2 .pkl/.pth,
torchvision/timm ResNet state dicts, or a detgn checkpoint; a path, URL or catalog:// alias.
The model described by the config (default: configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml) decides
the target names; OUT holds {"model": state_dict} with only the tensors that matched.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="weights to convert (path, URL or catalog:// alias)")
    ap.add_argument("output", help="detgn .pth to write")
    ap.add_argument("--config-file", default=os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml"),
                    help="config of the target model")
    ap.add_argument("opts", nargs="*", help="config overrides: KEY VALUE pairs")
    args = ap.parse_args(argv)
    import torch

    from detgn.checkpoint import DetectionCheckpointer
    from detgn.utils.errors import UserInputError
    from detgn.engine import setup_cfg_or_exit
    from detgn.modeling import build_model

    cfg = setup_cfg_or_exit(args)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    model = build_model(cfg)
    ck = DetectionCheckpointer(model, save_to_disk=False)
    try:
        ck.load(args.input, checkpointables=[])
    except UserInputError as e:  # missing, unreadable, unsafe or mismatched weights
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = ck.last_report
    sd = model.state_dict()
    out = {"model": {k: sd[k] for k in report["matched"]}, "converted_by": "detgn convert_weights", "source_format": report["format"]}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    torch.save(out, tmp)
    os.replace(tmp, args.output)
    from detgn.checkpoint import format_load_report

    print(format_load_report(report))
    print(f"wrote {len(out['model'])} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
