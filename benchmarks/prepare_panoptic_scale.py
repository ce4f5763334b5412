"""python -m detgn.data.prepare_panoptic on COCO-like synthetic panoptic data: 1 process vs several, and a resume.

    python benchmarks/prepare_panoptic_scale.py --out /tmp/pan_scale [--images 1000] [--workers 2]

Writes --images 480x640 panoptic PNGs (about 20 segments each: rectangles of 80 thing and 53 stuff categories,
COCO's counts, plus void) and their json once, then times the conversion to semantic PNGs with 1 worker and with
--workers, each into a fresh folder, checks that both folders hold the same bytes, removes a tenth of the outputs
and times the resumed run.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(out: str, num_images: int, seed: int = 0):
    from PIL import Image

    from detgn.evaluation.panoptic_evaluation import id2rgb

    pan_json = os.path.join(out, "panoptic.json")
    if os.path.exists(pan_json):
        return pan_json, os.path.join(out, "panoptic")
    os.makedirs(os.path.join(out, "panoptic"), exist_ok=True)
    rng = np.random.RandomState(seed)
    cats = [{"id": i + 1, "name": f"thing{i}", "isthing": 1} for i in range(80)]
    cats += [{"id": 100 + i, "name": f"stuff{i}", "isthing": 0} for i in range(53)]
    images, annotations = [], []
    for i in range(num_images):
        ids = np.zeros((480, 640), np.uint32)
        segments = []
        for k in range(20):
            y, x = rng.randint(0, 440), rng.randint(0, 600)
            h, w = rng.randint(20, 240), rng.randint(20, 320)
            sid = k + 1 + 1000 * rng.randint(0, 100)
            ids[y : y + h, x : x + w] = sid
            cat = int(rng.randint(1, 81)) if k % 3 else int(rng.randint(100, 153))
            segments.append({"id": sid, "category_id": cat, "iscrowd": 0})
        present = set(np.unique(ids).tolist())
        segments = [dict(s, area=int((ids == s["id"]).sum())) for s in segments if s["id"] in present]
        name = f"{i:012d}.png"
        Image.fromarray(id2rgb(ids)).save(os.path.join(out, "panoptic", name))
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "height": 480, "width": 640})
        annotations.append({"image_id": i, "file_name": name, "segments_info": segments})
    with open(pan_json, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)
    return pan_json, os.path.join(out, "panoptic")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from detgn.data.prepare_panoptic import prepare
    from detgn.engine.precision import cpu_description, cpu_model

    pan_json, pan_root = generate(args.out, args.images)
    print(f"# {args.images} images 480x640; CPU {cpu_model()} ({cpu_description()})", flush=True)
    rows = {}
    for workers in (1, args.workers):
        dst = os.path.join(args.out, f"semantic_{workers}")
        shutil.rmtree(dst, ignore_errors=True)
        t = time.perf_counter()
        r = prepare(pan_json, pan_root, dst, workers=workers)
        rows[workers] = time.perf_counter() - t
        print(f"workers {workers}: {r['written']} written in {rows[workers]:.1f} s", flush=True)
    a, b = (os.path.join(args.out, f"semantic_{w}") for w in (1, args.workers))
    same = all(open(os.path.join(a, f), "rb").read() == open(os.path.join(b, f), "rb").read() for f in os.listdir(a))
    for f in sorted(os.listdir(b))[::10]:
        if f.endswith(".png"):
            os.remove(os.path.join(b, f))
    t = time.perf_counter()
    r = prepare(pan_json, pan_root, b, workers=args.workers)
    resumed = time.perf_counter() - t
    print(f"resume: {r['written']} written, {r['kept']} kept in {resumed:.1f} s")
    print("\n| workers | seconds | images/s |\n|---|---|---|")
    for w, sec in rows.items():
        print(f"| {w} | {sec:.1f} | {args.images / sec:.0f} |")
    print(f"\nspeed-up x{rows[1] / rows[args.workers]:.2f}; outputs identical: {same}")


if __name__ == "__main__":
    main()
