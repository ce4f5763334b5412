#!/usr/bin/env python
"""Draw a dataset's ground truth after the training augmentations into PNG files. A panoptic dataset (with
semantic labels) is drawn as panoptic ground truth: stuff regions, things, a legend of the stuff colours.

    python tools/visualize_data.py --config-file configs/nuclei_quickstart.yaml [--output output/vis_data] \
        [--dataset nuclei_mini_train] [--num 8] [--source annotation|dataloader] [KEY VALUE ...]
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser() -> argparse.ArgumentParser:
    """The tool's argument parser (also read by tests/test_documented_commands.py)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--config-file", default="", metavar="FILE", help="config file (its INPUT.* decide the augmentations)"
    )
    ap.add_argument("--dataset", default=None, help="registered dataset name (default: the first of DATASETS.TRAIN)")
    ap.add_argument(
        "--output",
        default=os.path.join("output", "vis_data"),
        help="folder for the PNG files (default: output/vis_data)",
    )
    ap.add_argument("--num", type=int, default=8, help="number of images to draw")
    ap.add_argument(
        "--source",
        choices=["annotation", "dataloader"],
        default="dataloader",
        help="raw annotations, or after the training augmentations",
    )
    ap.add_argument("--seed", type=int, default=0, help="augmentation seed")
    ap.add_argument("--overwrite", action="store_true", help="replace pictures already in --output")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides: KEY VALUE pairs")
    return ap


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    from detgn.jobs import setup_cfg_or_exit
    from detgn.data import DatasetCatalog, DatasetMapper, MetadataCatalog
    from detgn.structures import BitMasks, PolygonMasks
    from detgn.utils.panoptic_visualizer import draw_panoptic
    from detgn.utils.visualizer import draw_instances
    import cv2

    ap = build_parser()
    args = ap.parse_args(argv)
    cfg = setup_cfg_or_exit(args)
    cfg.MODEL.MASK_ON = True
    name = args.dataset or cfg.DATASETS.TRAIN[0]
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)
    names = meta.get("thing_classes")
    mapper = DatasetMapper(cfg, True)
    if args.source == "annotation":
        mapper.augmentations = []
    elif cfg.INPUT.COPY_PASTE.ENABLED:  # the samples training sees: another image's instances pasted on each
        from detgn.data import CopyPasteMapper

        c = cfg.INPUT.COPY_PASTE
        mapper = CopyPasteMapper(
            mapper, dicts, prob=c.PROB, max_objects=c.MAX_OBJECTS, min_visible_area=c.MIN_VISIBLE_AREA
        )
    chosen = list(dicts[: args.num])
    paths = [os.path.join(args.output, f"{os.path.splitext(os.path.basename(d['file_name']))[0]}.png") for d in chosen]
    existing = [p for p in paths if os.path.exists(p)]
    if existing and not args.overwrite:
        print(
            f"error: {len(existing)} picture(s) already in {args.output} (first: {os.path.basename(existing[0])}); give "
            "another --output, or --overwrite to replace them",
            file=sys.stderr,
        )
        return 2
    os.makedirs(args.output, exist_ok=True)
    for i, (d, path) in enumerate(zip(chosen, paths)):
        out = mapper(d, np.random.RandomState(args.seed + i))
        img = out["image"].numpy().transpose(1, 2, 0)
        if cfg.INPUT.FORMAT == "RGB":
            img = img[:, :, ::-1]
        inst = out["instances"]
        h, w = img.shape[:2]
        masks = None
        if inst.has("gt_masks"):
            gm = inst.gt_masks
            masks = (BitMasks.from_polygon_masks(gm, h, w) if isinstance(gm, PolygonMasks) else gm).tensor.numpy()
        if "sem_seg" in out:
            vis = draw_panoptic(
                np.ascontiguousarray(img),
                out["sem_seg"].numpy(),
                masks if masks is not None else np.zeros((0, h, w), bool),
                inst.gt_classes.tolist(),
                None,
                thing_names=names,
                stuff_names=meta.get("stuff_classes"),
                stuff_colors=meta.get("stuff_colors"),
                ignore_value=cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            )
        else:
            vis = draw_instances(
                np.ascontiguousarray(img),
                inst.gt_boxes.tensor.numpy(),
                masks,
                inst.gt_classes.tolist(),
                None,
                names,
                draw_labels=True,
            )
        cv2.imwrite(path, vis)
        print(f"{path}: {len(inst)} instances, {w}x{h}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
