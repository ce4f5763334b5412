#!/usr/bin/env python
"""Cut an image-classification dataset (ImageFolder class folders) out of a registered detection dataset:
crops centred on its objects, one folder per category, and a "background" folder of crops that overlap
no object. It makes data for tools/train_classifier.py from the bundled nuclei images:

    python tools/make_crop_dataset.py                       # -> output/nuclei_crops/{train,val}
    python tools/make_crop_dataset.py --train nuclei_mini_train --val nuclei_mini_val --output output/nuclei_crops \
        [--size 64] [--per-image 10]
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", default="nuclei_mini_train", help="registered detection dataset for the train folders")
    ap.add_argument(
        "--val", default="nuclei_mini_val", help="registered detection dataset for the val folders ('' for none)"
    )
    ap.add_argument(
        "--output", default=os.path.join("output", "nuclei_crops"), help="writes OUTPUT/train and OUTPUT/val"
    )
    ap.add_argument("--size", type=int, default=64, help="side of the saved crops (pixels)")
    ap.add_argument("--per-image", type=int, default=10, help="object crops per image (and as many background crops)")
    ap.add_argument("--seed", type=int, default=0, help="which objects and background places are picked")
    ap.add_argument("--overwrite", action="store_true", help="write into output folders that already hold crops")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    from detgn.data import DatasetCatalog, MetadataCatalog
    from detgn.data.datasets.crops import write_crop_folders
    from detgn.utils.errors import UserInputError

    for split, name in (("train", args.train), ("val", args.val)):
        if not name:
            continue
        try:
            dicts = DatasetCatalog.get(name)
        except (UserInputError, KeyError) as e:
            print(f"error: dataset {name}: {e}", file=sys.stderr)
            return 2
        out = os.path.join(args.output, split)
        try:
            counts = write_crop_folders(
                dicts,
                MetadataCatalog.get(name).get("thing_classes"),
                out,
                size=args.size,
                per_image=args.per_image,
                seed=args.seed,
                overwrite=args.overwrite,
            )
        except UserInputError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"{out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
