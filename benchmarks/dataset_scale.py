"""Dataset records at COCO scale: load time (first and cached), memory per process and per DataLoader worker.

    python benchmarks/dataset_scale.py --out /tmp/coco_scale                  # train2017 size: 118,287 images, ~857k polygons
    python benchmarks/dataset_scale.py --out /tmp/coco_scale --scale 0.1      # a tenth, for a quick look

Writes a synthetic COCO instances json of train2017's shape (same image count, ~7.2 polygon annotations
per image, 1-3 polygons of 8-40 points each, 80 categories) and one empty file per image (the loader
checks that images exist), then runs each measurement in a fresh process:

- `first`: DatasetCatalog.get with an empty record cache (parse + validate + write the record file), CPU s;
- `cached`: the same in a new process with the cache filled, wall and CPU s;
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


def generate(out: str, num_images: int, seed: int = 0) -> str:
    path = os.path.join(out, "instances_synthetic.json")
    if os.path.exists(path):
        return path
    rng = random.Random(seed)
    images, anns = [], []
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    aid = 1
    for i in range(1, num_images + 1):
        h, w = rng.choice([(480, 640), (640, 480), (427, 640), (640, 427), (375, 500)])
        name = f"{i:012d}.jpg"
        images.append({"id": i, "file_name": name, "height": h, "width": w, "license": 1, "coco_url": "", "date_captured": ""})
        open(os.path.join(out, "images", name), "wb").close()
        for _ in range(max(0, int(rng.expovariate(1 / 7.24)))):
            x, y = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
            bw, bh = rng.uniform(4, min(300, w - x)), rng.uniform(4, min(300, h - y))
            polys = []
            for _ in range(rng.choice([1, 1, 1, 2, 3])):
                k = rng.randint(4, 20)
                polys.append([round(v, 2) for j in range(k) for v in (x + rng.uniform(0, bw), y + rng.uniform(0, bh))])
            anns.append({"id": aid, "image_id": i, "category_id": rng.randint(1, 80), "iscrowd": 0, "area": round(bw * bh * 0.6, 2),
                         "bbox": [round(x, 2), round(y, 2), round(bw, 2), round(bh, 2)], "segmentation": polys})
            aid += 1
    cats = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in range(1, 81)]
    with open(path, "w") as f:
        json.dump({"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": cats}, f)
    return path


_CHILD = r"""
import json, os, resource, sys, time, pickle
import numpy as np
mode, json_file, root, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
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
    records = DatasetFromList(load_coco_json(json_file, root, "scale"), copy=False, serialize=True)
    import gc; gc.collect()
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


def run_child(mode: str, json_file: str, root: str, workers: int, env: dict) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, mode, json_file, root, str(workers)], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the synthetic dataset and the cache")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of train2017's 118,287 images")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers that read every record once")
    ap.add_argument("--detectron2", default=None, metavar="DIR",
                    help="a detectron2 checkout (imported from there; its load_coco_json and DatasetFromList are pure Python): "
                         "measured side by side instead of the pickled-buffer reference")
    args = ap.parse_args(argv)
    sys.path.insert(0, REPO)
    from detgn.engine.precision import cpu_description, cpu_model

    n = int(round(118287 * args.scale))
    t = time.perf_counter()
    json_file = generate(args.out, n)
    print(f"# {n} images, {os.path.getsize(json_file) / 1e6:.0f} MB json ({time.perf_counter() - t:.0f} s to generate); "
          f"CPU {cpu_model()} ({cpu_description()})", flush=True)
    root = os.path.join(args.out, "images")
    cache = os.path.join(args.out, "cache")
    env = dict(os.environ, DETGN_CACHE_DIR=cache, OMP_NUM_THREADS="1")
    if os.path.isdir(cache):
        for f in os.listdir(cache):
            os.remove(os.path.join(cache, f))
    rows = [dict(run_child("store", json_file, root, args.workers, env), mode="first (parse, validate, write cache)")]
    rows.append(dict(run_child("store", json_file, root, args.workers, env), mode="cached (map the record file)"))
    rows.append(dict(run_child("list", json_file, root, args.workers, dict(env, DETGN_RECORD_CACHE="0")), mode="list of dicts (cache off)"))
    if args.detectron2:
        d2env = dict(env, PYTHONPATH=os.path.abspath(args.detectron2) + os.pathsep + env.get("PYTHONPATH", ""))
        rows.append(dict(run_child("detectron2", json_file, root, args.workers, d2env), mode="detectron2 (load_coco_json + DatasetFromList)"))
    else:
        rows.append(dict(run_child("pickled", json_file, root, args.workers, dict(env, DETGN_RECORD_CACHE="0")),
                         mode="pickled buffer (detectron2's DatasetFromList, reimplemented)"))
    for r in rows:
        print(json.dumps(r), flush=True)
    stores = [f for f in os.listdir(cache) if f.endswith(".rec")]
    print(f"\nrecord file: {sum(os.path.getsize(os.path.join(cache, f)) for f in stores) / 1e6:.0f} MB (mapped once per machine)")
    print("\n| records | load CPU s | load wall s | process RSS MB | held by the records MB | worker private MB after reading all |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['cpu_s']} | {r['wall_s']} | {r['rss_mb']} | {r['records_mb']} | {r.get('worker_private_mb')} |")


if __name__ == "__main__":
    main()
