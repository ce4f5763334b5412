#!/usr/bin/env python
"""Run a trained model on images, a folder or a video and draw masks, boxes, classes and scores.

    python tools/demo.py --config-file configs/nuclei_quickstart.yaml --input img.png|folder|video.mp4 \
        [--output output/demo] [--confidence-threshold 0.5] [--json detections.json] MODEL.WEIGHTS model_final.pth

An exported model (tools/export_model.py) runs with --runtime onnxruntime MODEL.WEIGHTS output/export/model.onnx
or --runtime torchscript MODEL.WEIGHTS output/export/model.ts; the config then gives the class names and the
test-time resize, and must keep the inference settings the model was exported with.

One PNG per input image (per frame for videos). A missing or unreadable input is reported by
name and skipped; the rest go on.
"""
import argparse
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXT = (".mp4", ".avi", ".mov", ".mkv")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", required=True, metavar="FILE", help="model config")
    ap.add_argument("--input", nargs="+", required=True, help="image files, folders of images, or video files")
    ap.add_argument("--output", default=os.path.join("output", "demo"), help="folder for the PNG files (default: output/demo)")
    ap.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to draw")
    ap.add_argument("--json", default=None, help="also write the detections as COCO-style JSON to this file")
    ap.add_argument("--runtime", default="eager", choices=["eager", "torchscript", "onnxruntime"],
                    help="eager detgn (MODEL.WEIGHTS a checkpoint), or an exported model.ts / model.onnx in MODEL.WEIGHTS")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (e.g. MODEL.WEIGHTS x.pth)")
    return ap.parse_args(argv)


def _expand(inputs):
    out = []
    for p in inputs:
        if os.path.isdir(p):
            files = sorted(f for f in glob.glob(os.path.join(p, "*")) if f.lower().endswith(IMAGE_EXT + VIDEO_EXT))
            out.extend(files)
        else:
            out.append(p)
    return out


def _exported_predictor(cfg, runtime):
    """An exported model behind DefaultPredictor's interface: image -> {"instances": Instances}."""
    from detgn.export import OnnxPredictor, TorchScriptPredictor, check_config_matches
    from detgn.export.predictors import to_instances

    if cfg.SOLVER.AMP.ENABLED:
        print(f"note: the exported model runs in float32 ({runtime}); SOLVER.AMP does not apply", file=sys.stderr)
    cls = OnnxPredictor if runtime == "onnxruntime" else TorchScriptPredictor
    predictor = cls(cfg.MODEL.WEIGHTS, min_size=cfg.INPUT.MIN_SIZE_TEST, max_size=cfg.INPUT.MAX_SIZE_TEST)
    check_config_matches(predictor.meta, cfg)
    if predictor.meta["input"]["channels"] != cfg.INPUT.FORMAT:
        from detgn.export.predictors import ExportedModelError

        raise ExportedModelError(f"INPUT.FORMAT {cfg.INPUT.FORMAT} differs from the exported model's {predictor.meta['input']['channels']}")
    return lambda image: {"instances": to_instances(predictor(image), image.shape[:2])}


def main(argv=None):
    args = parse_args(argv)
    import cv2
    from tqdm import tqdm

    from detgn.engine import setup_cfg_or_exit
    from detgn.data.detection_utils import ImageReadError, read_image
    from detgn.evaluation.coco_evaluation import instances_to_coco_json
    from detgn.utils.prediction_pictures import draw_prediction

    cfg = setup_cfg_or_exit(args)
    names = None
    if cfg.DATASETS.TEST:
        from detgn.data import MetadataCatalog

        names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes")
    from detgn.utils.errors import UserInputError
    from detgn.engine import DefaultPredictor

    try:
        predictor = DefaultPredictor(cfg) if args.runtime == "eager" else _exported_predictor(cfg, args.runtime)
    except (UserInputError, ImportError) as e:  # missing, unreadable, unsafe or mismatched weights, or a bad config value
        print(f"error: MODEL.WEIGHTS: {e}", file=sys.stderr)
        return 2
    if args.runtime == "eager":
        p = predictor.precision
        print(f"precision for inference on {p.device_type}: {p.name} ({p.reason})")
    os.makedirs(args.output, exist_ok=True)
    files = _expand(args.input)
    detections, failed = [], []
    for idx, path in enumerate(tqdm(files, desc="demo", unit="input", disable=len(files) < 2)):
        stem = os.path.splitext(os.path.basename(path))[0]
        if path.lower().endswith(VIDEO_EXT):
            cap = cv2.VideoCapture(path)
            if not cap.isOpened():
                print(f"warning: cannot open video {path}; skipped", file=sys.stderr)
                failed.append(path)
                continue
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
            with tqdm(total=frames, desc=os.path.basename(path), unit="frame") as bar:
                k = 0
                while True:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    inst = predictor(frame)["instances"]
                    cv2.imwrite(os.path.join(args.output, f"{stem}_{k:06d}.png"), draw_prediction(frame, inst, names, args.confidence_threshold))
                    k += 1
                    bar.update(1)
            cap.release()
            continue
        try:
            img = read_image(path, "BGR")
        except ImageReadError as e:
            print(f"warning: {e}; skipped", file=sys.stderr)
            failed.append(path)
            continue
        inst = predictor(img)["instances"]
        cv2.imwrite(os.path.join(args.output, stem + ".png"), draw_prediction(img, inst, names, args.confidence_threshold))
        if args.json:
            for d in instances_to_coco_json(inst[inst.scores >= args.confidence_threshold], idx):
                d["file_name"] = path
                detections.append(d)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(detections, f)
    print(f"wrote {len(files) - len(failed)} result(s) to {args.output}" + (f"; {len(failed)} input(s) skipped" if failed else ""))
    return 1 if failed and len(failed) == len(files) else 0


if __name__ == "__main__":
    sys.exit(main())
