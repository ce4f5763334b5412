"""Dataset records at COCO scale: load time (first and cached), memory per process and per DataLoader worker.

    python benchmarks/dataset_scale.py --out /tmp/coco_scale                  # train2017 size: 118,287 images, ~857k polygons
    python benchmarks/dataset_scale.py --out /tmp/coco_scale --scale 0.1      # a tenth, for a quick look

Writes a synthetic COCO instances json of train2017's shape (same image count, ~7.2 polygon annotations
per image, 1-3 polygons of 8-40 points each, 80 categories) and one empty file per image (the loader
checks that images exist), then runs each measurement in a fresh process:

- `first`: DatasetCatalog.get with an empty record cache (parse + validate + write the record file), CPU s;
- `cached`: the same in a new process with the cache filled, wall and CPU s (the json's size, mtime, ctime and
  inode match the cache's record: the json is not opened);
- `cached, json touched`: after `touch` of the json (same bytes, new mtime and ctime), so the freshness check
  hashes the whole json before mapping the record file;
- `list`: the records as a Python list of dicts (DETGN_RECORD_CACHE=0), RSS of the process;
- `store`: the records mapped from the cache, RSS of the process;
- worker private memory (Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup) after each of
  2 DataLoader workers read every record once, for the list and for the store;
- `pickled`: the reference of detectron2's DatasetFromList (every record pickled into one numpy byte
  buffer + offsets), the same measurements.
Prints one JSON line per measurement and a table.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(out: str, num_images: int, seed: int = 0, lvis: bool = False) -> str:
    """COCO-shaped (80 categories, ~7.2 annotations per image) or, with `lvis`, LVIS v1-shaped (1,203
    categories with r/c/f frequencies and a long tail, ~12.7 annotations per image, images named by
    coco_url under train2017/, federated per-image lists)."""
    path = os.path.join(out, "lvis_synthetic.json" if lvis else "instances_synthetic.json")
    if os.path.exists(path):
        return path
    rng = random.Random(seed)
    images, anns = [], []
    folder = os.path.join(out, "images", "train2017") if lvis else os.path.join(out, "images")
    os.makedirs(folder, exist_ok=True)
    num_cats = 1203 if lvis else 80
    weights = [1.0 / (c**1.1) for c in range(1, num_cats + 1)] if lvis else None  # long tail
    aid = 1
    for i in range(1, num_images + 1):
        h, w = rng.choice([(480, 640), (640, 480), (427, 640), (640, 427), (375, 500)])
        name = f"{i:012d}.jpg"
        img = {"id": i, "height": h, "width": w, "license": 1, "date_captured": ""}
        if lvis:
            img.update(
                coco_url=f"http://images.cocodataset.org/train2017/{name}",
                neg_category_ids=[rng.randint(1, num_cats)],
                not_exhaustive_category_ids=[],
            )
        else:
            img.update(file_name=name, coco_url="")
        images.append(img)
        open(os.path.join(folder, name), "wb").close()
        for _ in range(max(0, int(rng.expovariate(1 / (12.7 if lvis else 7.24))))):
            x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            bw, bh = rng.uniform(4, min(300, w - x)), rng.uniform(4, min(300, h - y))
            polys = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                k = rng.randint(4, 20)
                polys.append([round(v, 2) for j in range(k) for v in (x + rng.uniform(0, bw), y + rng.uniform(0, bh))])
            cat = rng.choices(range(1, num_cats + 1), weights)[0] if lvis else rng.randint(1, 80)
            ann = {
                "id": aid,
                "image_id": i,
                "category_id": cat,
                "area": round(bw * bh * 0.6, 2),
                "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)],
                "segmentation": polys,
            }
            if not lvis:
                ann["iscrowd"] = 0
            anns.append(ann)
            aid += 1
    cats = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in range(1, num_cats + 1)]
    if lvis:
        for c in cats:
            c["frequency"] = "f" if c["id"] <= 400 else "c" if c["id"] <= 860 else "r"
    with open(path, "w") as f:
        json.dump({"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}, f)
    return path


_CHILD = r"""
import json, os, resource, sys, time, pickle
import numpy as np
mode, json_file, root, workers, kind = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
def private_mb(pid="self"):
    total = 0
    for line in open(f"/proc/{pid}/smaps_rollup"):
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024
def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
import torch
from detgn.data import DatasetCatalog, register_coco_instances
base_rss = rss_mb()
c0, t0 = time.process_time(), time.perf_counter()
if mode == "detectron2":  # detectron2's own loader and DatasetFromList(serialize=True), from --detectron2 DIR
    from detectron2.data.common import DatasetFromList
    from detectron2.data.datasets.coco import load_coco_json
    if kind == "lvis":
        from detectron2.data.datasets.lvis import load_lvis_json
        records = DatasetFromList(load_lvis_json(json_file, root), copy=False, serialize=True)  # no name: it has no metadata for it
    else:
        records = DatasetFromList(load_coco_json(json_file, root, "scale"), copy=False, serialize=True)
    import gc; gc.collect()
else:
    if kind == "lvis":
        from detgn.data import register_lvis_instances
        register_lvis_instances("scale", {}, json_file, root)
    else:
        register_coco_instances("scale", {}, json_file, root)
    records = DatasetCatalog.get("scale")
if mode == "pickled":  # detectron2's DatasetFromList(serialize=True): every record pickled into one byte buffer
    blobs = [np.frombuffer(pickle.dumps(r, protocol=-1), dtype=np.uint8) for r in records]
    addr = np.cumsum(np.asarray([len(b) for b in blobs], dtype=np.int64))
    buf = np.concatenate(blobs)
    del blobs, records
    import gc; gc.collect()
    class Pickled:
        def __len__(self): return len(addr)
        def __getitem__(self, i):
            a = 0 if i == 0 else addr[i - 1]
            return pickle.loads(memoryview(buf[a:addr[i]]))
    records = Pickled()
cpu, wall = time.process_time() - c0, time.perf_counter() - t0
held = rss_mb() - base_rss
class Touch(torch.utils.data.Dataset):
    def __len__(self): return len(records)
    def __getitem__(self, i):
        r = records[i]
        return len(r["annotations"])
def report(worker_id):
    pass
result = {"mode": mode, "n": len(records), "cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "rss_mb": round(rss_mb(), 1),
          "records_mb": round(held, 1)}
if workers:
    class Spy(torch.utils.data.Dataset):
        def __len__(self): return workers
        def __getitem__(self, w):
            info = torch.utils.data.get_worker_info()
            n, start = len(records), 0
            for i in range(info.id, n, info.num_workers):
                r = records[i]
            return private_mb()
    loader = torch.utils.data.DataLoader(Spy(), batch_size=1, num_workers=workers, sampler=list(range(workers)))
    result["worker_private_mb"] = [round(float(x), 1) for x in loader]
print(json.dumps(result))
"""


def run_child(mode: str, json_file: str, root: str, workers: int, env: dict, kind: str = "coco") -> dict:
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, json_file, root, str(workers), kind],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the synthetic dataset and the cache")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of train2017's 118,287 images")
    ap.add_argument("--lvis", action="store_true", help="an LVIS v1-size file instead (100,170 images at --scale 1)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers that read every record once")
    ap.add_argument(
        "--detectron2",
        default=None,
        metavar="DIR",
        help="a detectron2 checkout (imported from there; its load_coco_json and DatasetFromList are pure Python): "
        "measured side by side instead of the pickled-buffer reference",
    )
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from detgn.engine.precision import cpu_description, cpu_model

    n = int(round((100170 if args.lvis else 118287) * args.scale))
    t = time.perf_counter()
    json_file = generate(args.out, n, lvis=args.lvis)
    kind = "lvis" if args.lvis else "coco"
    print(
        f"# {n} images, {os.path.getsize(json_file) / 1e6:.0f} MB json ({time.perf_counter() - t:.0f} s to generate); "
        f"CPU {cpu_model()} ({cpu_description()})",
        flush=True,
    )
    root = os.path.join(args.out, "images") + ("/" if args.lvis else "")  # LVIS: file names are train2017/<name>
    cache = os.path.join(args.out, "cache")
    env = dict(os.environ, DETGN_CACHE_DIR=cache, OMP_NUM_THREADS="1")
    if os.path.isdir(cache):
        for f in os.listdir(cache):
            os.remove(os.path.join(cache, f))
    rows = [
        dict(run_child("store", json_file, root, args.workers, env, kind), mode="first (parse, validate, write cache)")
    ]
    rows.append(dict(run_child("store", json_file, root, args.workers, env, kind), mode="cached (map the record file)"))
    os.utime(json_file)  # new mtime and ctime, same bytes: the freshness check hashes the json, then maps the file
    rows.append(
        dict(run_child("store", json_file, root, args.workers, env, kind), mode="cached, json touched (content hashed)")
    )
    rows.append(
        dict(
            run_child("list", json_file, root, args.workers, dict(env, DETGN_RECORD_CACHE="0"), kind),
            mode="list of dicts (cache off)",
        )
    )
    if args.detectron2:
        d2env = dict(env, PYTHONPATH=os.path.abspath(args.detectron2) + os.pathsep + env.get("PYTHONPATH", ""))
        rows.append(
            dict(
                run_child("detectron2", json_file, root, args.workers, d2env, kind),
                mode="detectron2 (its load_*_json + DatasetFromList)",
            )
        )
    else:
        rows.append(
            dict(
                run_child("pickled", json_file, root, args.workers, dict(env, DETGN_RECORD_CACHE="0"), kind),
                mode="pickled buffer (detectron2's DatasetFromList, reimplemented)",
            )
        )
    for r in rows:
        print(json.dumps(r), flush=True)
    stores = [f for f in os.listdir(cache) if f.endswith(".rec")]
    print(
        f"\nrecord file: {sum(os.path.getsize(os.path.join(cache, f)) for f in stores) / 1e6:.0f} MB (mapped once per machine)"
    )
    print(
        "\n| records | load CPU s | load wall s | process RSS MB | held by the records MB | worker private MB after reading all |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['cpu_s']} | {r['wall_s']} | {r['rss_mb']} | {r['records_mb']} | {r.get('worker_private_mb')} |"
        )


if __name__ == "__main__":
    main()
