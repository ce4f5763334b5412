#!/usr/bin/env python
"""Convert weights in any supported format to a detgn .pth and print the load report.

    python tools/convert_weights.py IN OUT --config-file CFG [--to detgn|torchvision] [--allow-partial] [KEY VALUE ...]

IN: Detectron (Caffe2) .pkl (ImageNet GN/BN ResNets or detection models), detectron2 .pkl/.pth,
torchvision/timm ResNet state dicts, mmdetection 2.x/3.x Mask/Faster R-CNN .pth (--from mmdet to insist),
or a detgn checkpoint; a path, URL or catalog:// alias.
The model of --config-file (required: the network the file holds, e.g.
configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml for a ResNet-50 GN) decides the target names; OUT holds
{"model": state_dict} with the tensors that matched; with --to torchvision, a plain state dict of the
ResNet (and a classifier's fc) in torchvision's names, e.g. for a classifier of tools/train_classifier.py:
    python tools/convert_weights.py out/model_final.pth r50_gn_tv.pth --to torchvision \
        --config-file configs/ImageNet/R_50_GN_100ep.yaml CLASSIFIER.NUM_CLASSES 1000

Refused, with nothing written (exit status 2), when the file does not fit that model: a tensor of
another shape, backbone tensors the file lacks (a smaller network) or backbone tensors the model
lacks (a deeper one). --allow-partial writes the matching tensors anyway. Tensors the model has
and the file does not outside the backbone (FPN, heads of an ImageNet file) are expected.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _examples(keys, n=3):
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def fit_problems(report) -> list:
    """Why a load report says the file holds another network than the model (empty when it fits)."""
    problems = []
    if report["shape_mismatch"]:
        k, a, b = report["shape_mismatch"][0]
        problems.append(f"{len(report['shape_mismatch'])} tensors of another shape (e.g. {k}: file {a}, model {b})")
    backbone = "backbone.bottom_up."
    file_has_backbone = any(k.startswith(backbone) for k in report["matched"])
    lacking = [k for k in report["missing"] if k.startswith(backbone)]
    if file_has_backbone and lacking:
        problems.append(f"the file lacks {len(lacking)} backbone tensors ({_examples(lacking)}): a smaller network")
    heads = ("roi_heads.", "proposal_generator.", "sem_seg_head.")
    heads_missing = [k for k in report["missing"] if k.startswith(heads)]
    heads_unused = [k for k in report["unused"] if k.startswith(heads)]
    if heads_missing and heads_unused:  # the file has heads, not this model's: another family (Mask R-CNN vs Cascade)
        problems.append(
            f"the model's {len(heads_missing)} head tensors ({_examples(heads_missing)}) are not in the file, which "
            f"has {len(heads_unused)} other head tensors ({_examples(heads_unused)}): another architecture"
        )
    extra = [k for k in report["unused"] if k.startswith(backbone)]
    if extra:
        problems.append(
            f"the model lacks {len(extra)} backbone tensors of the file ({_examples(extra)}): a deeper network"
        )
    return problems


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", help="weights to convert (path, URL or catalog:// alias)")
    ap.add_argument("output", help="detgn .pth to write")
    ap.add_argument(
        "--config-file",
        required=True,
        metavar="FILE",
        help="config of the target model (the architecture the file holds), e.g. configs/GN/mask_rcnn_R_50_FPN_3x_gn.yaml",
    )
    ap.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the matching tensors even when the file does not fit the model (see above)",
    )
    ap.add_argument(
        "--to",
        choices=["detgn", "torchvision"],
        default="detgn",
        help="names of OUT: detgn's {'model': ...} checkpoint, or a torchvision ResNet state dict (backbone and fc only)",
    )
    ap.add_argument(
        "--from",
        dest="source_format",
        choices=["auto", "detgn", "detectron2", "caffe2", "torchvision", "mmdet"],
        default="auto",
        help="format of IN; auto (default) recognises it from the keys. mmdet: an mmdetection "
        "2.x/3.x detector (refused if its keys are not mmdetection's)",
    )
    ap.add_argument("opts", nargs="*", help="config overrides: KEY VALUE pairs")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_intermixed_args(argv)  # IN OUT, options and KEY VALUE pairs in any order


def main(argv=None):
    ap = build_parser()
    args = ap.parse_intermixed_args(argv)  # IN OUT, options and KEY VALUE pairs in any order
    import torch

    from detgn.checkpoint import DetectionCheckpointer
    from detgn.utils.errors import UserInputError
    from detgn.jobs import setup_cfg_or_exit
    from detgn.modeling import build_model

    from detgn.config import get_classifier_cfg

    cfg = setup_cfg_or_exit(args, get_classifier_cfg)  # the classifier's keys too: it converts classifiers as well
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    if args.to == "torchvision" and cfg.MODEL.RESNETS.STRIDE_IN_1X1 and cfg.MODEL.RESNETS.DEPTH >= 50:
        print(
            "error: --to torchvision needs MODEL.RESNETS.STRIDE_IN_1X1 False: torchvision's bottleneck strides in the 3x3, "
            "so a stride-in-1x1 network would compute something else under its names",
            file=sys.stderr,
        )
        return 2
    try:
        model = build_model(cfg)
        ck = DetectionCheckpointer(model, save_to_disk=False)
        ck.weights_format = None if args.source_format == "auto" else args.source_format
        ck.load(args.input, checkpointables=[])
    except UserInputError as e:  # missing, unreadable, unsafe or mismatched weights
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = ck.last_report
    problems = fit_problems(report)
    if problems and not args.allow_partial:
        print(
            f"error: {args.input} does not fit the model of {args.config_file}: {'; '.join(problems)}. Pick the config of the "
            f"network the file holds with --config-file, or write the {len(report['matched'])} matching tensors anyway with "
            f"--allow-partial; {args.output} was not written",
            file=sys.stderr,
        )
        return 2
    sd = model.state_dict()
    out = {
        "model": {k: sd[k] for k in report["matched"]},
        "converted_by": "detgn convert_weights",
        "source_format": report["format"],
    }
    from detgn.checkpoint.detection_checkpoint import ws_convention_of

    if ws_convention_of(model):  # e.g. "mmcv" after mmdetection GN+WS weights: kept when the .pth is loaded again
        out["ws_convention"] = ws_convention_of(model)
    note = ""
    if args.to == "torchvision":
        from detgn.checkpoint.formats import detgn_names_to_torchvision

        kept = {k: v for k, v in out["model"].items() if k.startswith(("backbone.bottom_up.", "fc."))}
        if not kept:
            print(f"error: {args.input} has no ResNet tensors to write in torchvision's names", file=sys.stderr)
            return 2
        out = detgn_names_to_torchvision(kept)
        dropped = len(report["matched"]) - len(kept)
        r = cfg.MODEL.RESNETS
        net = f"resnext{r.DEPTH}_{r.NUM_GROUPS}x{r.WIDTH_PER_GROUP}d" if r.NUM_GROUPS > 1 else f"resnet{r.DEPTH}"
        note = (
            f"torchvision names: load with torchvision.models.{net}(norm_layer=...) and feed "
            f"{cfg.INPUT.FORMAT} 0-255 pixels minus PIXEL_MEAN {list(cfg.MODEL.PIXEL_MEAN)} divided by PIXEL_STD "
            f"{list(cfg.MODEL.PIXEL_STD)}, as this model was trained"
            + (f"; {dropped} tensors (FPN, heads) have no torchvision name and were left out" if dropped else "")
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    from detgn.utils.atomic import atomic_write

    with atomic_write(args.output, "wb") as f:
        torch.save(out, f)
    from detgn.checkpoint import format_load_report

    print(format_load_report(report))
    if note:
        print(note)
    print(f"wrote {len(out['model'] if args.to == 'detgn' else out)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
