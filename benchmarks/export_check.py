"""Proof and speed of an export: eager detgn vs TorchScript vs ONNX Runtime on a dataset, same process.

    python benchmarks/export_check.py --config-file configs/nuclei_quickstart.yaml \\
        --weights output/quickstart/model_final.pth --output /tmp/export_check [--repeats 3]
    python benchmarks/export_check.py --parity --output /tmp/export_parity    # detectron2 parity weights and image

Exports both formats (tools/export_model.py's code), runs the three predictors on every image of
DATASETS.TEST[0] and reports: detections matched against eager (same class, box IoU > 0.99),
max score difference, lowest mask IoU; COCO bbox / segm AP of each runtime (detgn's COCOEvaluator);
and s/img of each whole predictor (resize + model + boxes at the original size + mask pasting),
fp32, the three interleaved image by image, median over images x repeats.
"""

import argparse
import os
import statistics
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from detgn.config import get_cfg  # noqa: E402
from detgn.engine import DefaultPredictor  # noqa: E402
from detgn.engine.precision import cpu_description, cpu_model  # noqa: E402
from detgn.export import OnnxPredictor, TorchScriptPredictor, export_model  # noqa: E402
from detgn.export.predictors import to_instances  # noqa: E402
from detgn.export.verify import compare_detections, instances_to_numpy  # noqa: E402

RUNTIMES = ("eager", "torchscript", "onnxruntime")


def _parity_setup(out_dir):
    """The detectron2 parity fixture's R50 config and synthetic weights, saved as a checkpoint."""
    import cv2

    from tests.modeling.test_detectron2_parity import FIXTURE, _model

    reference = torch.load(os.path.join(FIXTURE, "outputs.pth"), weights_only=True)
    model = _model(reference, "contiguous")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "parity_weights.pth")
    torch.save({"model": model.state_dict()}, path)
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "GN", "mask_rcnn_R_50_FPN_3x_gn.yaml"))
    cfg.merge_from_list(reference["config"])
    cfg.merge_from_list(
        ["MODEL.WEIGHTS", path, "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "384", "DATASETS.TEST", "()"]
    )
    return cfg, [("parity image.png", cv2.imread(os.path.join(FIXTURE, "image.png"), cv2.IMREAD_COLOR), None)]


def _dataset_setup(args):
    from detgn.data import DatasetCatalog
    from detgn.data.detection_utils import read_image

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(["MODEL.WEIGHTS", args.weights, "MODEL.DEVICE", "cpu", "SOLVER.AMP.ENABLED", "False"])
    dicts = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    return cfg, [(d["file_name"], read_image(d["file_name"], "BGR"), d) for d in dicts]


def _ap(cfg, dicts_and_outputs):
    from detgn.evaluation import COCOEvaluator

    ev = COCOEvaluator(cfg.DATASETS.TEST[0], distributed=False)
    ev.reset()
    for d, inst in dicts_and_outputs:
        ev.process([d], [{"instances": inst}])
    res = ev.evaluate()
    return {t: (res[t]["AP"], res[t]["AP50"]) for t in ("bbox", "segm") if t in res}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config-file", default=os.path.join(REPO, "configs", "nuclei_quickstart.yaml"))
    ap.add_argument("--weights", default=None, help="trained checkpoint (not needed with --parity)")
    ap.add_argument("--parity", action="store_true", help="use the detectron2 parity fixture's weights and image")
    ap.add_argument("--output", required=True, help="folder for the two exports")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the images")
    ap.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg, items = _parity_setup(args.output) if args.parity else _dataset_setup(args)
    eager = DefaultPredictor(cfg)
    paths = {}
    for fmt in ("torchscript", "onnx"):
        t = time.perf_counter()
        paths[fmt] = export_model(
            cfg, eager.model, fmt=fmt, output_dir=os.path.join(args.output, fmt), sample_image=items[0][1]
        )["model"]
        print(
            f"exported {paths[fmt]} in {time.perf_counter() - t:.1f} s ({os.path.getsize(paths[fmt]) / 2**20:.1f} MB)"
        )
    ts = TorchScriptPredictor(paths["torchscript"])
    ort = OnnxPredictor(paths["onnx"], num_threads=args.threads)
    run = {"eager": lambda im: instances_to_numpy(eager(im)["instances"]), "torchscript": ts, "onnxruntime": ort}

    outputs = {r: [] for r in RUNTIMES}
    times = {r: [] for r in RUNTIMES}
    for rep in range(args.repeats + 1):  # pass 0: warm-up and the outputs compared below
        for _, image, _ in items:
            for r in RUNTIMES:
                t = time.perf_counter()
                det = run[r](image)
                dt = time.perf_counter() - t
                if rep == 0:
                    outputs[r].append(det)
                else:
                    times[r].append(dt)

    print(
        f"\n{len(items)} image(s); CPU: {cpu_model()} ({cpu_description()}), {args.threads} threads, fp32, "
        f"torch {torch.__version__}"
    )
    for r in ("torchscript", "onnxruntime"):
        reports = [compare_detections(e, g) for e, g in zip(outputs["eager"], outputs[r])]
        n_ref = sum(x.num_reference for x in reports)
        n_got = sum(x.num_exported for x in reports)
        matched = sum(x.matched for x in reports)
        print(
            f"{r:12s} vs eager: {matched} of {n_ref} eager / {n_got} exported detections matched "
            f"({100 * matched / max(n_ref, 1):.2f}%), max score diff {max(x.max_score_diff for x in reports):.1e}, "
            f"lowest mask IoU {min(x.min_mask_iou for x in reports):.4f}, masks below 0.99: "
            f"{sum(x.masks_below for x in reports)} (+{sum(x.masks_borderline for x in reports)} only at pixels on the threshold); "
            f"all images pass: {all(x.ok for x in reports)}"
        )
    if not args.parity:
        print("\nCOCO AP (bbox AP / AP50, segm AP / AP50):")
        for r in RUNTIMES:
            ap_ = _ap(cfg, [(d, to_instances(det, image.shape[:2])) for (_, image, d), det in zip(items, outputs[r])])
            print(
                f"  {r:12s} bbox {ap_['bbox'][0]:.2f} / {ap_['bbox'][1]:.2f}   segm {ap_['segm'][0]:.2f} / {ap_['segm'][1]:.2f}"
            )
    print(f"\ns/img (median over {len(items)} images x {args.repeats} passes; whole predictor):")
    base = statistics.median(times["eager"])
    for r in RUNTIMES:
        m = statistics.median(times[r])
        print(f"  {r:12s} {m:.4f} s/img  ({m / base:.3f}x eager)  [{min(times[r]):.4f}-{max(times[r]):.4f}]")


if __name__ == "__main__":
    main()
