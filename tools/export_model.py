#!/usr/bin/env python
"""Export a trained detgn model to TorchScript or ONNX, check it against eager detgn, write a README.

    python tools/export_model.py --config-file configs/nuclei_quickstart.yaml --format onnx \\
        [--output output/export] [--sample-image img.png] [--opset 17] MODEL.WEIGHTS output/quickstart/model_final.pth

Writes OUTPUT/model.onnx (or model.ts), detgn_export.json, sample_input.png and README.md. The
sample image (default: the first image of DATASETS.TEST) is the tracing input; the exported model
is then run on it and its detections are compared with eager detgn's (same class, box IoU > 0.99,
score within 1e-3, mask IoU >= 0.99). A config the exporter cannot handle fails with one line
before any file is written (exit status 2).

The export is traced on the CPU in float32 and the eager reference runs in float32 too, so a config's
MODEL.DEVICE and SOLVER.AMP (bf16 where the CPU has AMX) do not apply here: a line says so. The
exported models are made and tested for CPU inference (ONNX Runtime's CPU provider, TorchScript on
the CPU); running them on a GPU is not tested.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    ap.add_argument("--format", required=True, choices=["torchscript", "onnx"], help="what to export to")
    ap.add_argument(
        "--output",
        default=os.path.join("output", "export"),
        help="folder for the model, its metadata, a sample input and a README (default: output/export)",
    )
    ap.add_argument(
        "--sample-image", default=None, help="image to trace and check with (default: first image of DATASETS.TEST)"
    )
    ap.add_argument(
        "--opset",
        type=int,
        default=17,
        help="ONNX opset (>= 16; default 17). GN is one GroupNormalization node from 21, its decomposition below",
    )
    ap.add_argument(
        "--overwrite", action="store_true", help="replace the export files already in --output (else refused)"
    )
    ap.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="export even when MODEL.WEIGHTS leaves parameters of the model random (weights of another architecture)",
    )
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (e.g. MODEL.WEIGHTS model_final.pth)"
    )
    from detgn.jobs.args import parse_with_overrides

    return parse_with_overrides(ap, argv)


def _sample_image(cfg, path):
    """(BGR image, its path): --sample-image, else the first image of DATASETS.TEST."""
    from detgn.data import DatasetCatalog
    from detgn.data.detection_utils import read_image
    from detgn.export import ExportError

    if path is None:
        if not cfg.DATASETS.TEST:
            raise ExportError("no --sample-image given and DATASETS.TEST is empty: pass --sample-image <image file>")
        dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])
        if not dicts:
            raise ExportError(f"dataset {cfg.DATASETS.TEST[0]} has no images: pass --sample-image <image file>")
        path = dicts[0]["file_name"]
    return read_image(path, "BGR"), path


def main(argv=None):
    args = parse_args(argv)
    from detgn.jobs import setup_cfg_or_exit
    from detgn.utils.errors import UserInputError

    cfg = setup_cfg_or_exit(args)
    if cfg.MODEL.DEVICE != "cpu" or cfg.SOLVER.AMP.ENABLED:
        print(
            f"note: exporting and checking on the CPU in float32 (the config's MODEL.DEVICE {cfg.MODEL.DEVICE}, "
            f"SOLVER.AMP.ENABLED {cfg.SOLVER.AMP.ENABLED} do not apply to export)"
        )
    cfg.MODEL.DEVICE = "cpu"
    cfg.SOLVER.AMP.ENABLED = False
    try:
        from detgn.export import check_export_output, check_exportable

        check_exportable(cfg, args.format, args.opset)  # before anything is built or written
        check_export_output(args.output, args.format, args.overwrite)
        image, sample_path = _sample_image(cfg, args.sample_image)
        from detgn.engine import DefaultPredictor

        predictor = DefaultPredictor(
            cfg, allow_partial_weights=args.allow_partial_weights
        )  # eager detgn, weights loaded (the reference)
        thing_classes = None
        if cfg.DATASETS.TEST:
            from detgn.data import MetadataCatalog

            thing_classes = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes")
        from detgn.export import export_model

        paths = export_model(
            cfg,
            predictor.model,
            fmt=args.format,
            output_dir=args.output,
            sample_image=image,
            opset=args.opset,
            thing_classes=thing_classes,
            overwrite=args.overwrite,
        )
    except (UserInputError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from detgn.export.verify import compare_with_eager

    report = compare_with_eager(predictor, paths["model"], image)
    size_mb = os.path.getsize(paths["model"]) / 2**20
    print(f"wrote {paths['model']} ({size_mb:.1f} MB), {paths['meta']}, {paths['sample']}, {paths['readme']}")
    print(f"check on {sample_path}: {report.summary()}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
