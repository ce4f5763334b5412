"""Build the record cache of datasets ahead of a job, so that its first start does not parse the json.

    python -m detgn.data.prepare coco_2017_train coco_2017_val      # registered dataset names
    python -m detgn.data.prepare --json ann.json --image-root imgs/   # any COCO file

With DETGN_CACHE_DIR on a folder every machine of a cluster sees, one run serves them all. Prints, for
each dataset, its number of records, the record file and the time taken; exit status 2 with one line
for a dataset that cannot be read.
"""

import argparse
import os
import sys
import time

__all__ = ["main"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="registered dataset names (e.g. coco_2017_train)")
    ap.add_argument("--json", default=None, help="a COCO instances json to cache (with --image-root)")
    ap.add_argument("--image-root", default=None, help="its image folder")
    args = ap.parse_args(argv)
    if not args.names and not args.json:
        ap.error("give dataset names or --json with --image-root")
    if bool(args.json) != bool(args.image_root):
        ap.error("--json and --image-root go together")
    from detgn.data import DatasetCatalog, register_coco_instances
    from detgn.data.record_cache import cache_dir, cache_enabled
    from detgn.utils.errors import UserInputError

    try:
        enabled = cache_enabled()
    except UserInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not enabled:
        print("error: DETGN_RECORD_CACHE is off; unset it to build the cache", file=sys.stderr)
        return 2
    names = list(args.names)
    if args.json:
        name = f"prepare:{os.path.abspath(args.json)}"
        register_coco_instances(name, {}, args.json, args.image_root)
        names.append(name)
    for name in names:
        started = time.perf_counter()
        try:
            records = DatasetCatalog.get(name)
        except UserInputError as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(
                f"interrupted while caching {name}: no partial record file was left in {cache_dir()}", file=sys.stderr
            )
            return 130
        where = ", ".join(s.path for s in getattr(records, "stores", []))
        if not where:  # the folder could not take the file (the WARNING above says why): the one job here failed
            print(
                f"error: {name}: no record file could be written in {cache_dir()} (see the warning above); set "
                "DETGN_CACHE_DIR to a writable folder",
                file=sys.stderr,
            )
            return 2
        print(f"{name}: {len(records)} records in {where} ({time.perf_counter() - started:.1f} s)")
    print(f"cache folder: {cache_dir()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
