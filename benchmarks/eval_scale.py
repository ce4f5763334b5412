"""COCO evaluation at val2017 size: 5,000 images x 100 detections with RLE masks, the three backends side by side.

    python benchmarks/eval_scale.py --out /tmp/eval_scale                     # 5,000 images
    python benchmarks/eval_scale.py --out /tmp/eval_scale --images 500        # a quick look

Writes a synthetic ground truth (val2017's image count, ~7.3 instances per image, polygon masks) and a
results file of --dets detections per image (boxes jittered around the ground truth plus random ones,
RLE masks of their boxes, random scores), then evaluates bbox and segm with each backend in a fresh
process through tools/evaluate_json.py (its checks of both files included; the time inside detgn's
evaluate_predictions_on_coco, COCOeval's part, printed apart), and prints wall time, peak RSS (ru_maxrss) and
the 12 summary numbers, and how far each backend's numbers are from pycocotools' (0 = the same bits).
"""

import argparse
import json
import os
import random
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(out: str, num_images: int, dets: int, seed: int = 0):
    gt_path, res_path = os.path.join(out, "gt.json"), os.path.join(out, f"results_{dets}.json")
    if os.path.exists(gt_path) and os.path.exists(res_path):
        return gt_path, res_path
    import numpy as np
    import pycocotools.mask as mu

    os.makedirs(out, exist_ok=True)
    rng = random.Random(seed)
    images, anns, results = [], [], []
    aid = 1
    for i in range(1, num_images + 1):
        h, w = rng.choice([(480, 640), (640, 480), (427, 640), (375, 500)])
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": h, "width": w})
        boxes = []
        for _ in range(max(1, int(rng.expovariate(1 / 7.3)))):
            x, y = rng.uniform(0, w - 30), rng.uniform(0, h - 30)
            bw, bh = rng.uniform(8, min(250, w - x)), rng.uniform(8, min(250, h - y))
            cat = rng.randint(1, 80)
            poly = [x, y, x + bw, y, x + bw * 0.8, y + bh, x + bw * 0.1, y + bh * 0.9]
            anns.append(
                {
                    "id": aid,
                    "image_id": i,
                    "category_id": cat,
                    "iscrowd": 0,
                    "area": bw * bh * 0.85,
                    "bbox": [x, y, bw, bh],
                    "segmentation": [[round(v, 2) for v in poly]],
                }
            )
            boxes.append((x, y, bw, bh, cat))
            aid += 1
        for k in range(dets):
            if k < 3 * len(boxes):
                x, y, bw, bh, cat = boxes[k % len(boxes)]
                x, y = x + rng.gauss(0, 4), y + rng.gauss(0, 4)
                bw, bh = max(2.0, bw * rng.uniform(0.8, 1.2)), max(2.0, bh * rng.uniform(0.8, 1.2))
            else:
                x, y = rng.uniform(0, w - 10), rng.uniform(0, h - 10)
                bw, bh, cat = rng.uniform(4, 120), rng.uniform(4, 120), rng.randint(1, 80)
            m = np.zeros((h, w), np.uint8, order="F")
            x0, y0 = int(max(0, x)), int(max(0, y))
            m[y0 : int(min(h, y + bh)), x0 : int(min(w, x + bw))] = 1
            rle = mu.encode(m)
            results.append(
                {
                    "image_id": i,
                    "category_id": cat,
                    "score": round(rng.random(), 4),
                    "bbox": [x, y, bw, bh],
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                }
            )
    cats = [{"id": c, "name": f"class_{c}"} for c in range(1, 81)]
    with open(gt_path, "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    with open(res_path, "w") as f:
        json.dump(results, f)
    return gt_path, res_path


_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[4])
import evaluate_json as ej
from detgn.evaluation import coco_evaluation
evaluating = [0.0]
inner = coco_evaluation.evaluate_predictions_on_coco
def timed(*a, **k):
    t = time.perf_counter()
    try:
        return inner(*a, **k)
    finally:
        evaluating[0] += time.perf_counter() - t
coco_evaluation.evaluate_predictions_on_coco = timed
t = time.perf_counter()
stats = ej.evaluate_json(sys.argv[1], sys.argv[2], ["bbox", "segm"], backend=sys.argv[3])
print(json.dumps({"backend": sys.argv[3], "seconds": round(time.perf_counter() - t, 1),
                  "evaluation_seconds": round(evaluating[0], 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "stats": stats}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from detgn.engine.precision import cpu_description, cpu_model

    gt, res = generate(args.out, args.images, args.dets)
    print(f"# {args.images} images x {args.dets} detections; CPU {cpu_model()} ({cpu_description()})", flush=True)
    rows = []
    for backend in ("pycocotools", "faster_coco_eval", "hotcoco"):
        r = subprocess.run(
            [sys.executable, "-c", _CHILD, gt, res, backend, os.path.join(REPO, "tools")],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        if r.returncode != 0:
            print(f"{backend}: failed: {r.stderr[-1500:]}")
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    ref = next((r for r in rows if r["backend"] == "pycocotools"), None)
    print(
        "\n| backend | tools/evaluate_json.py bbox + segm, s | of which COCOeval, s | peak RSS MB | bbox AP | segm AP | "
        "largest difference from pycocotools |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        diff = (
            max(abs(a - b) for t in ("bbox", "segm") for a, b in zip(r["stats"][t], ref["stats"][t]))
            if ref is not None
            else float("nan")
        )
        print(
            f"| {r['backend']} | {r['seconds']} | {r['evaluation_seconds']} | {r['peak_rss_mb']} | "
            f"{r['stats']['bbox'][0] * 100:.4f} | "
            f"{r['stats']['segm'][0] * 100:.4f} | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
