"""Make the semantic label PNGs of Panoptic FPN from COCO panoptic PNGs (detectron2's prepare_panoptic_fpn.py).

    python -m detgn.data.prepare_panoptic --panoptic-json panoptic_val2017.json \\
        --panoptic-root panoptic_val2017/ --output panoptic_stuff_val2017/ [--workers 8]
    python -m detgn.data.prepare_panoptic coco_2017_val_panoptic_separated    # a registered dataset's paths

Each output PNG (8-bit, one channel, named as its panoptic PNG) holds 1..S for the S stuff categories in id
order, 0 for every thing pixel, 255 for unlabelled pixels. Images are converted in parallel, each written to a
temporary name and renamed, so a file in the folder is always complete.

Resumable: the folder remembers (.detgn_prepare_panoptic.json) which json it was made from; a second run on it
converts only the images whose PNG is not there yet. A folder made from another json, or holding files this tool
did not write, is refused unless --overwrite is given.

Checked on the way, one line each (exit status 2): a PNG holding a segment id that its segments_info lacks, a PNG
whose size differs from its image entry, a segment of an unknown category, a missing PNG.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = ["main", "convert_one", "PanopticPrepareError"]

MANIFEST = ".detgn_prepare_panoptic.json"
_VERSION = 1


class PanopticPrepareError(Exception):
    """Bad panoptic input or an output folder this tool will not write into."""


def _json_digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def convert_one(job: Tuple[str, str, int, int, List[Dict], Dict[int, int]]) -> Optional[str]:
    """(panoptic PNG, output PNG, height, width, segments_info, category -> label) -> None, or the one-line
    problem. Writes the output atomically."""
    from PIL import Image

    from detgn.evaluation.panoptic_evaluation import rgb2id

    src, dst, height, width, segments, labels = job
    try:
        with Image.open(src) as im:
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        return f"{src}: panoptic PNG missing"
    except OSError as e:
        return f"{src}: not a readable image ({e})"
    if rgb.shape[:2] != (height, width):
        return f"{src}: {rgb.shape[0]}x{rgb.shape[1]} (h x w) but its image entry says {height}x{width}"
    ids = rgb2id(rgb)
    out = np.full(ids.shape, 255, dtype=np.uint8)
    known = {s["id"]: labels[s["category_id"]] for s in segments}
    present = np.unique(ids)
    stray = [int(i) for i in present if i != 0 and int(i) not in known]
    if stray:
        return (
            f"{src}: segment id(s) {stray[:5]} are in the PNG but not in its segments_info "
            "(the PNG and the json disagree; re-export them together)"
        )
    lut_ids = np.array(sorted(known), dtype=np.uint32)
    if len(lut_ids):
        pos = np.searchsorted(lut_ids, ids)
        pos = np.minimum(pos, len(lut_ids) - 1)
        hit = lut_ids[pos] == ids
        values = np.array([known[i] for i in lut_ids.tolist()], dtype=np.uint8)
        out[hit] = values[pos[hit]]
    tmp = dst + f".tmp{os.getpid()}.png"
    Image.fromarray(out).save(tmp)
    os.replace(tmp, dst)
    return None


def _paths_of(name: str) -> Tuple[str, str, str]:
    from detgn.data import MetadataCatalog

    meta = MetadataCatalog.get(name)
    if meta.get("panoptic_json") is None:
        raise PanopticPrepareError(f"{name} is not a registered panoptic dataset (no panoptic_json in its metadata)")
    return meta.panoptic_json, meta.panoptic_root, meta.sem_seg_root


def _check_output(folder: str, manifest: Dict, overwrite: bool) -> bool:
    """True when the folder is to be resumed; raises when it may not be written."""
    path = os.path.join(folder, MANIFEST)
    others = [f for f in os.listdir(folder) if f != MANIFEST] if os.path.isdir(folder) else []
    if os.path.isfile(path):
        try:
            with open(path) as f:
                old = json.load(f)
        except (OSError, ValueError):
            old = None
        same = isinstance(old, dict) and all(
            old.get(k) == manifest[k] for k in ("version", "json_digest", "stuff_classes")
        )
        if same:  # the same content (the json may have moved with its folder)
            return True
        if not overwrite:
            raise PanopticPrepareError(
                f"{folder} holds semantic PNGs made from another panoptic json ({(old or {}).get('panoptic_json')}); "
                "give another --output, or --overwrite to replace them"
            )
        return False
    if others and not overwrite:
        raise PanopticPrepareError(
            f"{folder} already holds {len(others)} file(s) not written by this tool; give an empty or new --output, "
            "or --overwrite to write into it"
        )
    return False


def prepare(panoptic_json: str, panoptic_root: str, output: str, workers: int = 0, overwrite: bool = False) -> Dict:
    """Convert every image of `panoptic_json`; returns {"written", "kept", "seconds"}. Raises PanopticPrepareError
    (or the dataset errors of read_panoptic_json) with a one-line message."""
    from detgn.data.datasets.coco_panoptic import read_panoptic_json, semantic_label_map

    started = time.perf_counter()
    data = read_panoptic_json(panoptic_json)
    if not os.path.isdir(panoptic_root):
        raise PanopticPrepareError(f"Panoptic PNG folder not found: {panoptic_root}")
    labels, stuff_classes = semantic_label_map(data["categories"])
    manifest = {
        "version": _VERSION,
        "panoptic_json": os.path.basename(panoptic_json),
        "json_digest": _json_digest(panoptic_json),
        "stuff_classes": stuff_classes,
    }
    resume = _check_output(output, manifest, overwrite)
    os.makedirs(output, exist_ok=True)
    if not resume:
        from detgn.utils.atomic import atomic_write_text

        atomic_write_text(os.path.join(output, MANIFEST), json.dumps(manifest, indent=1))
    images = {im["id"]: im for im in data["images"]}
    jobs, kept = [], 0
    for a in data["annotations"]:
        im = images[a["image_id"]]
        name = os.path.splitext(a["file_name"])[0] + ".png"
        dst = os.path.join(output, name)
        if resume and os.path.isfile(dst):
            kept += 1
            continue
        jobs.append(
            (
                os.path.join(panoptic_root, a["file_name"]),
                dst,
                int(im["height"]),
                int(im["width"]),
                a["segments_info"],
                labels,
            )
        )
    workers = workers or min(8, os.cpu_count() or 1)
    if workers == 1 or len(jobs) < 2:
        results = map(convert_one, jobs)
        for problem in results:
            if problem:
                raise PanopticPrepareError(problem)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for problem in pool.map(convert_one, jobs, chunksize=max(1, len(jobs) // (workers * 8))):
                if problem:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise PanopticPrepareError(problem)
    return {"written": len(jobs), "kept": kept, "seconds": time.perf_counter() - started}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="registered panoptic dataset names (their paths are used)")
    ap.add_argument("--panoptic-json", default=None)
    ap.add_argument(
        "--panoptic-root", default=None, help="the folder of panoptic PNGs (default: the json's path without .json)"
    )
    ap.add_argument("--output", default=None, help="the folder of semantic PNGs to make")
    ap.add_argument("--workers", type=int, default=0, help="processes (default: min(8, CPUs))")
    ap.add_argument(
        "--overwrite", action="store_true", help="write into a folder made from another json or holding other files"
    )
    args = ap.parse_args(argv)
    if not args.names and not args.panoptic_json:
        ap.error("give registered dataset names or --panoptic-json with --output")
    if args.panoptic_json and not args.output:
        ap.error("--panoptic-json needs --output")
    from detgn.utils.errors import UserInputError

    targets = []
    try:
        for name in args.names:
            targets.append((name, *_paths_of(name)))
        if args.panoptic_json:
            root = args.panoptic_root or os.path.splitext(args.panoptic_json)[0]
            targets.append((args.panoptic_json, args.panoptic_json, root, args.output))
        for label, pj, root, out in targets:
            r = prepare(pj, root, out, workers=args.workers, overwrite=args.overwrite)
            print(f"{label}: {r['written']} semantic PNGs written, {r['kept']} kept, in {out} ({r['seconds']:.1f} s)")
    except (PanopticPrepareError, UserInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: the PNGs written so far are complete; run the same command again to finish", file=sys.stderr
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
