"""Writes the key names and shapes of mmdetection checkpoints that detgn loads, one file per layout.

Without internet the real .pth files cannot be fetched, so the layouts are enumerated here from
mmdetection's module code and configs (read at mmdetection main, 2026):
  - mmdet/models/backbones/resnet.py, resnext.py: stem `conv1` + `{norm}1` (mmcv build_norm_layer names a
    norm by its abbreviation + postfix: "bn1", "gn1"), `layer{1..4}.{b}` Bottlenecks with conv1/2/3 +
    {norm}1/2/3 and `downsample.0` (conv) / `downsample.1` (norm) in block 0; ResNeXt width =
    planes * base_width / 64 * groups; convs have no bias. BN adds running_mean / running_var /
    num_batches_tracked.
  - mmdet/models/necks/fpn.py: `lateral_convs.{i}` (1x1) and `fpn_convs.{i}` (3x3) ConvModules (`.conv`,
    `.gn` / `.bn`; bias only without a norm), i = 0..3 for C2..C5; P6 by max pooling (no weights).
  - mmdet/models/dense_heads/rpn_head.py: `rpn_conv` (3x3, bias), `rpn_cls` (A = 3 anchors, sigmoid:
    A channels), `rpn_reg` (4A).
  - mmdet/models/roi_heads/bbox_heads/convfc_bbox_head.py: Shared2FC (`shared_fcs.0/1`) or Shared4Conv1FC
    (`shared_convs.0..3` ConvModules + `shared_fcs.0`), `fc_cls` (K + 1, background last), `fc_reg` (4K).
  - mmdet/models/roi_heads/mask_heads/fcn_mask_head.py: `convs.0..3` ConvModules, `upsample`
    (ConvTranspose2d 2x2 stride 2, bias), `conv_logits` (K, 1x1, bias).
  - configs/gn/*, configs/gn+ws/* (conv_cfg ConvWS: same parameter names), configs/mask_rcnn/*.
Every file is `key<TAB>(shape)` lines, K = 80 COCO classes.

    python tests/data/mmdet_layouts/make_layouts.py      # rewrites the *.txt files beside this script
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
K = 80
BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def norm(prefix, name, c, kind):
    keys = [(f"{prefix}{name}.weight", (c,)), (f"{prefix}{name}.bias", (c,))]
    if kind == "bn":
        keys += [(f"{prefix}{name}.running_mean", (c,)), (f"{prefix}{name}.running_var", (c,)),
                 (f"{prefix}{name}.num_batches_tracked", ())]
    return keys


def resnet(depth, kind, groups=1, base_width=64):
    keys = [("backbone.conv1.weight", (64, 3, 7, 7))] + norm("backbone.", f"{kind}1", 64, kind)
    inplanes = 64
    for i, n in enumerate(BLOCKS[depth]):
        planes = 64 * 2 ** i
        width = planes if groups == 1 else planes * base_width // 64 * groups
        for b in range(n):
            p = f"backbone.layer{i + 1}.{b}."
            keys += [(p + "conv1.weight", (width, inplanes, 1, 1))] + norm(p, f"{kind}1", width, kind)
            keys += [(p + "conv2.weight", (width, width // groups, 3, 3))] + norm(p, f"{kind}2", width, kind)
            keys += [(p + "conv3.weight", (planes * 4, width, 1, 1))] + norm(p, f"{kind}3", planes * 4, kind)
            if b == 0:
                keys += [(p + "downsample.0.weight", (planes * 4, inplanes, 1, 1))] + norm(p + "downsample.", "1", planes * 4, kind)
            inplanes = planes * 4
    return keys


def conv_module(prefix, cout, cin, k, kind):
    """mmcv ConvModule: `.conv` (bias only without a norm) and its norm `.gn` / `.bn`."""
    if kind is None:
        return [(f"{prefix}.conv.weight", (cout, cin, k, k)), (f"{prefix}.conv.bias", (cout,))]
    return [(f"{prefix}.conv.weight", (cout, cin, k, k))] + norm(prefix + ".", kind, cout, kind)


def fpn(kind):
    keys = []
    for i, c in enumerate((256, 512, 1024, 2048)):
        keys += conv_module(f"neck.lateral_convs.{i}", 256, c, 1, kind)
    for i in range(4):
        keys += conv_module(f"neck.fpn_convs.{i}", 256, 256, 3, kind)
    return keys


def rpn():
    return [("rpn_head.rpn_conv.weight", (256, 256, 3, 3)), ("rpn_head.rpn_conv.bias", (256,)),
            ("rpn_head.rpn_cls.weight", (3, 256, 1, 1)), ("rpn_head.rpn_cls.bias", (3,)),
            ("rpn_head.rpn_reg.weight", (12, 256, 1, 1)), ("rpn_head.rpn_reg.bias", (12,))]


def bbox_head(kind):
    p = "roi_head.bbox_head."
    if kind is None:  # Shared2FCBBoxHead
        keys = [(p + "shared_fcs.0.weight", (1024, 256 * 49)), (p + "shared_fcs.0.bias", (1024,)),
                (p + "shared_fcs.1.weight", (1024, 1024)), (p + "shared_fcs.1.bias", (1024,))]
    else:  # Shared4Conv1FCBBoxHead
        keys = [k for i in range(4) for k in conv_module(f"{p}shared_convs.{i}", 256, 256, 3, kind)]
        keys += [(p + "shared_fcs.0.weight", (1024, 256 * 49)), (p + "shared_fcs.0.bias", (1024,))]
    return keys + [(p + "fc_cls.weight", (K + 1, 1024)), (p + "fc_cls.bias", (K + 1,)),
                   (p + "fc_reg.weight", (4 * K, 1024)), (p + "fc_reg.bias", (4 * K,))]


def mask_head(kind):
    p = "roi_head.mask_head."
    keys = [k for i in range(4) for k in conv_module(f"{p}convs.{i}", 256, 256, 3, kind)]
    return keys + [(p + "upsample.weight", (256, 256, 2, 2)), (p + "upsample.bias", (256,)),
                   (p + "conv_logits.weight", (K, 256, 1, 1)), (p + "conv_logits.bias", (K,))]


def detector(depth, kind, head_kind, mask=True, groups=1, base_width=64):
    keys = resnet(depth, kind, groups, base_width) + fpn(head_kind) + rpn() + bbox_head(head_kind)
    return keys + (mask_head(head_kind) if mask else [])


# file name -> (mmdetection config(s) it stands for, keys)
LAYOUTS = {
    "mask_rcnn_r50_fpn_gn_all": ("configs/gn/mask-rcnn_r50-fpn-gn-all_{2x,3x}_coco, -contrib_{2x,3x}; "
                                 "configs/gn+ws/mask-rcnn_r50-fpn-gn-ws-all_{2x,20-23-24e}_coco", detector(50, "gn", "gn")),
    "mask_rcnn_r101_fpn_gn_all": ("configs/gn/mask-rcnn_r101-fpn-gn-all_{2x,3x}_coco; configs/gn+ws/mask-rcnn_r101-fpn-gn-ws-all_*",
                                  detector(101, "gn", "gn")),
    "mask_rcnn_x50_32x4d_fpn_gn_ws_all": ("configs/gn+ws/mask-rcnn_x50-32x4d-fpn-gn-ws-all_{2x,20-23-24e}_coco",
                                          detector(50, "gn", "gn", groups=32, base_width=4)),
    "mask_rcnn_x101_32x4d_fpn_gn_ws_all": ("configs/gn+ws/mask-rcnn_x101-32x4d-fpn-gn-ws-all_{2x,20-23-24e}_coco",
                                           detector(101, "gn", "gn", groups=32, base_width=4)),
    "faster_rcnn_r50_fpn_gn_ws_all": ("configs/gn+ws/faster-rcnn_{r50,r101,x50-32x4d,x101-32x4d}-fpn-gn-ws-all_1x_coco (R50 here)",
                                      detector(50, "gn", "gn", mask=False)),
    "mask_rcnn_r50_fpn_bn": ("configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco (BN backbone, plain FPN and 2fc head)",
                             detector(50, "bn", None)),
}


if __name__ == "__main__":
    for name, (source, keys) in LAYOUTS.items():
        with open(os.path.join(HERE, name + ".txt"), "w") as f:
            f.write(f"# mmdetection layout: {source}; {len(keys)} keys\n")
            f.writelines(f"{k}\t{tuple(s)}\n" for k, s in keys)
        print(name, len(keys))
