#!/usr/bin/env python
"""Run a trained model on images, a folder or a video and draw masks, boxes, classes and scores.

    python tools/demo.py --config-file configs/nuclei_quickstart.yaml --input img.png|folder|'*.jpg'|video.mp4 \
        [--input more ...] [--output output/demo] [--confidence-threshold 0.5] [--json detections.json] \
        MODEL.WEIGHTS output/quickstart/model_final.pth

An exported model (tools/export_model.py) runs with --runtime onnxruntime MODEL.WEIGHTS output/export/model.onnx
or --runtime torchscript MODEL.WEIGHTS output/export/model.ts; the config then gives the class names and the
test-time resize, and must keep the inference settings the model was exported with.

One PNG per input image, named <input name>_pred.png (<name>_<frame>_pred.png per video frame); two
inputs with one name get _2, _3 ... An existing file is never replaced without --overwrite (checked
before any work), and an output can never be an input. A missing or unreadable input is reported by
name and skipped; the rest go on; a write that fails stops the run with exit status 1. Without
MODEL.WEIGHTS the model is untrained: refused unless --random-weights.
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
    ap.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="PATH",
        help="an image file, a folder of images, a quoted glob ('imgs/*.jpg') or a video file; repeat for more",
    )
    ap.add_argument(
        "--output", default=os.path.join("output", "demo"), help="folder for the PNG files (default: output/demo)"
    )
    ap.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to draw")
    ap.add_argument("--json", default=None, help="also write the detections as COCO-style JSON to this file")
    ap.add_argument(
        "--max-side",
        type=int,
        default=4000,
        metavar="PIXELS",
        help="downscale larger inputs to this long side first (full-size masks of a huge image need N x H x W "
        "bytes; default 4000, 0 keeps every size)",
    )
    ap.add_argument(
        "--overwrite", action="store_true", help="replace output files that exist already (else refused before the run)"
    )
    ap.add_argument(
        "--allow-partial-weights",
        action="store_true",
        help="run even when MODEL.WEIGHTS leaves parameters of the model random (weights of another architecture)",
    )
    ap.add_argument(
        "--random-weights", action="store_true", help="allow running without MODEL.WEIGHTS (an untrained model)"
    )
    ap.add_argument(
        "--runtime",
        default="eager",
        choices=["eager", "torchscript", "onnxruntime"],
        help="eager detgn (MODEL.WEIGHTS a checkpoint), or an exported model.ts / model.onnx in MODEL.WEIGHTS",
    )
    ap.add_argument(
        "opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs (e.g. MODEL.WEIGHTS x.pth)"
    )
    from detgn.jobs.args import parse_with_overrides

    return parse_with_overrides(ap, argv)


def _expand(inputs):
    out = []
    for p in inputs:
        if os.path.isdir(p):
            found = sorted(
                f for f in glob.glob(os.path.join(glob.escape(p), "*")) if f.lower().endswith(IMAGE_EXT + VIDEO_EXT)
            )
            if not found:  # as a glob that matches nothing: nothing to do is not a success
                raise OutputError(
                    f"--input {p}: the folder holds no image or video ({', '.join(IMAGE_EXT + VIDEO_EXT)}); "
                    "nothing to run on"
                )
            out.extend(found)
        elif not os.path.exists(p) and glob.has_magic(p):
            out.extend(sorted(f for f in glob.glob(p) if f.lower().endswith(IMAGE_EXT + VIDEO_EXT)) or [p])
        else:
            out.append(p)
    return out


def plan_outputs(files, output_dir):
    """{input path: output stem} with unique stems (x.png and x.jpg -> x, x_2); the PNG is <stem>_pred.png."""
    taken, plan = {}, {}
    for path in files:
        stem = os.path.splitext(os.path.basename(path))[0]
        n = taken.get(stem, 0) + 1
        taken[stem] = n
        plan[path] = stem if n == 1 else f"{stem}_{n}"
    return plan


class OutputError(Exception):
    """An output the demo must not or cannot write; reported in one line, exit status 2 (before the run) or 1."""


def check_outputs(files, plan, output_dir, json_path, overwrite):
    """Before any work: the output folder and the --json folder exist (created) and are writable, no output
    is an input, and no output file exists unless `overwrite`."""
    inputs = {os.path.realpath(f) for f in files}
    targets = [os.path.join(output_dir, plan[f] + "_pred.png") for f in files if not f.lower().endswith(VIDEO_EXT)]
    targets += [json_path] if json_path else []
    for folder in {output_dir} | ({os.path.dirname(os.path.abspath(json_path))} if json_path else set()):
        try:
            os.makedirs(folder, exist_ok=True)
            probe = os.path.join(folder, f".demo_write_test.{os.getpid()}")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise OutputError(f"cannot write into {folder} ({e.strerror}); choose another --output / --json") from None
    for t in targets:
        if os.path.realpath(t) in inputs:
            raise OutputError(f"{t} is one of the inputs; choose another --output")
        if os.path.exists(t) and not overwrite:
            raise OutputError(f"{t} exists; choose another --output (or --json), or pass --overwrite to replace it")
    for f in files:
        if (
            f.lower().endswith(VIDEO_EXT)
            and not overwrite
            and glob.glob(os.path.join(glob.escape(output_dir), glob.escape(plan[f]) + "_*_pred.png"))
        ):
            raise OutputError(
                f"{output_dir} already holds frames of {plan[f]}; choose another --output, or pass --overwrite"
            )


def fit_long_side(image, max_side: int):
    """(image, scale): `image` downscaled so that its long side is at most `max_side` (0: unchanged)."""
    import cv2

    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image, 1.0
    scale = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA), scale


def _write_png(path, image):
    import cv2

    if not cv2.imwrite(path, image):
        raise OutputError(f"could not write {path} (disk full or folder not writable?)")


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

        raise ExportedModelError(
            f"INPUT.FORMAT {cfg.INPUT.FORMAT} differs from the exported model's {predictor.meta['input']['channels']}"
        )
    return lambda image: {"instances": to_instances(predictor(image), image.shape[:2])}


def _test_metadata(name: str):
    """The metadata of the config's first test dataset; a panoptic dataset sets its class names when loaded
    (from its record cache), so it is loaded here when it can be (the demo runs without it otherwise)."""
    from detgn.data import DatasetCatalog, MetadataCatalog
    from detgn.utils.errors import UserInputError

    meta = MetadataCatalog.get(name)
    if meta.get("evaluator_type") == "coco_panoptic_seg" and meta.get("stuff_classes") is None:
        try:
            DatasetCatalog.get(name)
        except (UserInputError, KeyError, OSError) as e:
            print(f"note: {name} could not be loaded ({e}); classes are drawn as numbers", file=sys.stderr)
    return meta


def draw_panoptic_prediction(img, panoptic_seg, meta, threshold: float):
    """PanopticFPN's output drawn: stuff regions, things (those of score >= threshold), a legend strip."""
    from detgn.utils.panoptic_visualizer import draw_panoptic, panoptic_to_parts

    ids, segments = panoptic_seg
    segments = [s for s in segments if not s.get("isthing") or s.get("score", 1.0) >= threshold]
    stuff, masks, classes, scores = panoptic_to_parts(ids.cpu().numpy(), segments)
    get = (lambda k: meta.get(k)) if meta is not None else (lambda k: None)
    return draw_panoptic(
        img,
        stuff,
        masks,
        classes,
        scores,
        thing_names=get("thing_classes"),
        stuff_names=get("stuff_classes"),
        stuff_colors=get("stuff_colors"),
        score_low=threshold,
    )


def main(argv=None):
    args = parse_args(argv)
    import cv2
    from tqdm import tqdm

    from detgn.jobs import setup_cfg_or_exit
    from detgn.data.detection_utils import ImageReadError, read_image
    from detgn.evaluation.coco_evaluation import instances_to_coco_json
    from detgn.utils.prediction_pictures import draw_prediction

    cfg = setup_cfg_or_exit(args)
    if not cfg.MODEL.WEIGHTS and not args.random_weights:
        print(
            "error: MODEL.WEIGHTS is empty, so the model is untrained and would draw random detections; pass "
            "MODEL.WEIGHTS <checkpoint> (e.g. output/quickstart/model_final.pth), or --random-weights to run it anyway",
            file=sys.stderr,
        )
        return 2
    try:
        files = _expand(args.input)
        plan = plan_outputs(files, args.output)
        check_outputs(files, plan, args.output, args.json, args.overwrite)
    except OutputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    names = None
    meta = None
    if cfg.DATASETS.TEST:
        meta = _test_metadata(cfg.DATASETS.TEST[0])
        names = meta.get("thing_classes")
    from detgn.utils.errors import UserInputError
    from detgn.engine import DefaultPredictor

    try:
        if args.runtime == "eager":
            predictor = DefaultPredictor(cfg, allow_partial_weights=args.allow_partial_weights)
        else:
            predictor = _exported_predictor(cfg, args.runtime)
    except (
        UserInputError,
        ImportError,
    ) as e:  # missing, unreadable, unsafe or mismatched weights, or a bad config value
        print(f"error: MODEL.WEIGHTS: {e}", file=sys.stderr)
        return 2
    from detgn.layers.mask_ops import MaskMemoryError

    if not cfg.MODEL.WEIGHTS:
        print(
            "WARNING: no MODEL.WEIGHTS: these are the detections of an untrained model (--random-weights)",
            file=sys.stderr,
        )
    if args.runtime == "eager":
        p = predictor.precision
        print(f"precision for inference on {p.device_type}: {p.name} ({p.reason})")
    detections, failed, written = [], [], 0
    try:
        for idx, path in enumerate(tqdm(files, desc="demo", unit="input", disable=len(files) < 2)):
            stem = plan[path]
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
                        frame = fit_long_side(frame, args.max_side)[0]
                        outputs = predictor(frame)
                        _write_png(
                            os.path.join(args.output, f"{stem}_{k:06d}_pred.png"),
                            draw_panoptic_prediction(frame, outputs["panoptic_seg"], meta, args.confidence_threshold)
                            if "panoptic_seg" in outputs
                            else draw_prediction(frame, outputs["instances"], names, args.confidence_threshold),
                        )
                        k += 1
                        bar.update(1)
                cap.release()
                written += 1
                continue
            try:
                img = read_image(path, "BGR")
            except ImageReadError as e:
                print(f"warning: {e}; skipped", file=sys.stderr)
                failed.append(path)
                continue
            img, scale = fit_long_side(img, args.max_side)
            if scale != 1.0:
                print(
                    f"note: {path} is larger than --max-side {args.max_side}; drawn at {img.shape[1]}x{img.shape[0]} "
                    f"(x{scale:.3f}; boxes in --json are in these pixels)",
                    file=sys.stderr,
                )
            outputs = predictor(img)
            inst = outputs["instances"]
            _write_png(
                os.path.join(args.output, stem + "_pred.png"),
                draw_panoptic_prediction(img, outputs["panoptic_seg"], meta, args.confidence_threshold)
                if "panoptic_seg" in outputs
                else draw_prediction(img, inst, names, args.confidence_threshold),
            )
            written += 1
            if args.json:
                for d in instances_to_coco_json(inst[inst.scores >= args.confidence_threshold], idx):
                    d["file_name"] = path
                    detections.append(d)
        if args.json:
            from detgn.utils.atomic import atomic_write

            try:
                with atomic_write(args.json) as f:
                    json.dump(detections, f)
            except OSError as e:
                raise OutputError(f"could not write {args.json} ({e.strerror})") from None
    except (OutputError, MaskMemoryError) as e:
        print(f"error: {e}; {written} result(s) were written to {args.output} before it", file=sys.stderr)
        return 1
    print(f"wrote {written} result(s) to {args.output}" + (f"; {len(failed)} input(s) skipped" if failed else ""))
    return 1 if failed and len(failed) == len(files) else 0


if __name__ == "__main__":
    sys.exit(main())
