"""ResNet / ResNeXt bottom-up backbone with a configurable norm (GN, FrozenBN, BN, ...).

Parameter names follow detectron2: stem.conv1(.norm), res{2..5}.{i}.conv{1,2,3}(.norm),
res{k}.0.shortcut(.norm).
"""

from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from detgn.layers import (
    run_checkpointed,
    Conv2d,
    DeformConv2d,
    FrozenBatchNorm2d,
    ShapeSpec,
    c2_msra_fill,
    get_norm,
    norm_from_cfg,
    ws_setting,
)
from detgn.utils.errors import ConfigValueError

from .backbone import BACKBONE_REGISTRY, Backbone

__all__ = ["BasicStem", "BottleneckBlock", "DeformBottleneckBlock", "BasicBlock", "ResNet", "build_resnet_backbone"]


class CNNBlockBase(nn.Module):
    """A block with known in/out channels and stride; `freeze()` stops its training."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def freeze(self):
        """requires_grad False on all parameters; BN layers become FrozenBN (GN keeps normalising per sample)."""
        for p in self.parameters():
            p.requires_grad = False
        FrozenBatchNorm2d.convert_frozen_batchnorm(self)
        return self


class BasicStem(CNNBlockBase):
    """7x7/2 conv (no bias) + norm + ReLU + 3x3/2 max-pool: stride 4."""

    def __init__(self, in_channels=3, out_channels=64, norm="FrozenBN", ws=False):
        super().__init__(in_channels, out_channels, 4)
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
            weight_standardization=ws,
        )
        c2_msra_fill(self.conv1)

    def forward(self, x):
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicBlock(CNNBlockBase):
    """Two 3x3 convs (ResNet-18/34)."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="FrozenBN", ws=False, **_):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(
                in_channels,
                out_channels,
                1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
                weight_standardization=ws,
            )
            if in_channels != out_channels
            else None
        )
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            3,
            stride=stride,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
            weight_standardization=ws,
        )
        self.conv2 = Conv2d(
            out_channels,
            out_channels,
            3,
            stride=1,
            padding=1,
            bias=False,
            norm=get_norm(norm, out_channels),
            weight_standardization=ws,
        )
        for layer in (self.shortcut, self.conv1, self.conv2):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class BottleneckBlock(CNNBlockBase):
    """1x1 -> 3x3 (grouped) -> 1x1 with a projection shortcut when the shape changes."""

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        num_groups=1,
        norm="FrozenBN",
        stride_in_1x1=False,
        dilation=1,
        ws=False,
    ):
        super().__init__(in_channels, out_channels, stride)
        self.shortcut = (
            Conv2d(
                in_channels,
                out_channels,
                1,
                stride=stride,
                bias=False,
                norm=get_norm(norm, out_channels),
                weight_standardization=ws,
            )
            if in_channels != out_channels
            else None
        )
        s1x1, s3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = Conv2d(
            in_channels,
            bottleneck_channels,
            1,
            stride=s1x1,
            bias=False,
            norm=get_norm(norm, bottleneck_channels),
            weight_standardization=ws,
        )
        self.conv2 = Conv2d(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=s3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            norm=get_norm(norm, bottleneck_channels),
            weight_standardization=ws,
        )
        self.conv3 = Conv2d(
            bottleneck_channels,
            out_channels,
            1,
            bias=False,
            norm=get_norm(norm, out_channels),
            weight_standardization=ws,
        )
        for layer in (self.shortcut, self.conv1, self.conv2, self.conv3):
            if layer is not None:
                c2_msra_fill(layer)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class DeformBottleneckBlock(BottleneckBlock):
    """BottleneckBlock whose 3x3 is a deformable convolution (detectron2's DeformBottleneckBlock, same keys).

    `conv2_offset` (a plain 3x3 conv with bias, zero-initialised, so training starts from the regular
    grid) predicts 18 G offset channels, or 27 G with `deform_modulated`: then its output is split in
    three equal chunks along channels, the first two concatenated are the offsets and the sigmoid of the
    third is the mask (detectron2's layout, which its checkpoints were trained with). G = deform_num_groups.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        *,
        bottleneck_channels,
        stride=1,
        num_groups=1,
        norm="FrozenBN",
        stride_in_1x1=False,
        dilation=1,
        ws=False,
        deform_modulated=False,
        deform_num_groups=1,
    ):
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
            ws=ws,
        )
        self.deform_modulated = deform_modulated
        s3x3 = 1 if stride_in_1x1 else stride
        conv3 = self.conv3
        del self.conv2, self.conv3  # re-added below in detectron2's order: conv1, conv2_offset, conv2, conv3
        self.conv2_offset = Conv2d(
            bottleneck_channels,
            (27 if deform_modulated else 18) * deform_num_groups,
            kernel_size=3,
            stride=s3x3,
            padding=dilation,
            dilation=dilation,
        )
        self.conv2 = DeformConv2d(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=s3x3,
            padding=dilation,
            bias=False,
            groups=num_groups,
            dilation=dilation,
            deformable_groups=deform_num_groups,
            norm=get_norm(norm, bottleneck_channels),
            weight_standardization=ws,
        )
        self.conv3 = conv3
        c2_msra_fill(self.conv2)
        nn.init.constant_(self.conv2_offset.weight, 0)
        nn.init.constant_(self.conv2_offset.bias, 0)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        if self.deform_modulated:
            dy_dx_a, dy_dx_b, mask = torch.chunk(self.conv2_offset(out), 3, dim=1)
            out = self.conv2(out, torch.cat((dy_dx_a, dy_dx_b), dim=1), mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = self.conv3(F.relu_(out))
        shortcut = self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out + shortcut)


class ResNet(Backbone):
    """Stem + stages; returns the stages named in `out_features` ("stem", "res2".."res5")."""

    def __init__(
        self,
        stem: nn.Module,
        stages: List[List[CNNBlockBase]],
        out_features: Optional[List[str]] = None,
        freeze_at: int = 0,
        checkpoint: Sequence[str] = (),
    ):
        """checkpoint: "stem" and stage names ("res2".."res5") whose activations are recomputed in the backward pass
        (each block of a stage separately; layers/activation_checkpoint.py)."""
        super().__init__()
        self.stem = stem
        current_stride = stem.stride
        self._out_feature_strides = {"stem": current_stride}
        self._out_feature_channels = {"stem": stem.out_channels}
        self.stage_names = []
        self.stages = []
        if out_features is not None:
            num_needed = (
                max(["res2", "res3", "res4", "res5"].index(f) + 1 for f in out_features if f != "stem")
                if any(f != "stem" for f in out_features)
                else 0
            )
            stages = stages[:num_needed]
        for i, blocks in enumerate(stages):
            name = f"res{i + 2}"
            stage = nn.Sequential(*blocks)
            self.add_module(name, stage)
            self.stage_names.append(name)
            self.stages.append(stage)
            current_stride = int(current_stride * torch.prod(torch.tensor([b.stride for b in blocks])).item())
            self._out_feature_strides[name] = current_stride
            self._out_feature_channels[name] = blocks[-1].out_channels
        self._out_features = list(out_features) if out_features is not None else [self.stage_names[-1]]
        for f in self._out_features:
            if f not in self._out_feature_channels:
                raise ValueError(
                    f"ResNet out_features has unknown stage '{f}'; available: {list(self._out_feature_channels)}"
                )
        unknown = [c for c in checkpoint if c != "stem" and c not in self.stage_names]
        if unknown:
            raise ConfigValueError(
                f"MODEL.ACTIVATION_CHECKPOINT.PARTS names {unknown}, which this ResNet does not have "
                f"(it has stem, {', '.join(self.stage_names)})"
            )
        self.checkpoint = tuple(checkpoint)
        self.freeze(freeze_at)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"ResNet takes an (N, C, H, W) input, got shape {tuple(x.shape)}")
        outputs = {}
        x = run_checkpointed(self.stem, x, modules=[self.stem]) if "stem" in self.checkpoint else self.stem(x)
        if "stem" in self._out_features:
            outputs["stem"] = x
        for name, stage in zip(self.stage_names, self.stages):
            if name in self.checkpoint:
                for block in stage:
                    x = run_checkpointed(block, x, modules=[block])
            else:
                x = stage(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int = 0):
        """Freeze the stem (freeze_at >= 1) and the first `freeze_at - 1` stages."""
        if freeze_at >= 1:
            self.stem.freeze()
        for idx, stage in enumerate(self.stages, start=2):
            if freeze_at >= idx:
                for block in stage.children():
                    block.freeze()
        return self

    @staticmethod
    def make_stage(block_class, num_blocks, *, in_channels, out_channels, first_stride, **kwargs) -> List[CNNBlockBase]:
        blocks = []
        for i in range(num_blocks):
            blocks.append(
                block_class(
                    in_channels=in_channels, out_channels=out_channels, stride=first_stride if i == 0 else 1, **kwargs
                )
            )
            in_channels = out_channels
        return blocks


_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet/ResNeXt from MODEL.RESNETS.* (depth, groups, width, norm, stride placement)."""
    r = cfg.MODEL.RESNETS
    norm = norm_from_cfg(r.NORM, cfg)
    ws = ws_setting(cfg.MODEL.WEIGHT_STANDARDIZATION.BACKBONE, cfg.MODEL.WEIGHT_STANDARDIZATION.CONVENTION)
    depth = r.DEPTH
    # DEPTH, RES5_DILATION, DEFORM_ON_PER_STAGE and what ResNet-18/34 allow: checked by config/rules.py
    stem = BasicStem(in_channels=input_shape.channels, out_channels=r.STEM_OUT_CHANNELS, norm=norm, ws=ws)
    in_channels = r.STEM_OUT_CHANNELS
    out_channels = r.RES2_OUT_CHANNELS
    bottleneck_channels = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages = []
    for idx, n in enumerate(_DEPTHS[depth]):
        dilation = r.RES5_DILATION if idx == 3 else 1
        first_stride = 1 if idx == 0 or (idx == 3 and dilation == 2) else 2
        kwargs = dict(in_channels=in_channels, out_channels=out_channels, first_stride=first_stride, norm=norm, ws=ws)
        if depth >= 50:
            kwargs.update(
                bottleneck_channels=bottleneck_channels,
                stride_in_1x1=r.STRIDE_IN_1X1,
                dilation=dilation,
                num_groups=r.NUM_GROUPS,
            )
            block = BottleneckBlock
            if r.DEFORM_ON_PER_STAGE[idx]:
                kwargs.update(deform_modulated=r.DEFORM_MODULATED, deform_num_groups=r.DEFORM_NUM_GROUPS)
                block = DeformBottleneckBlock
        else:
            block = BasicBlock
        stages.append(ResNet.make_stage(block, n, **kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2
    return ResNet(
        stem,
        stages,
        out_features=r.OUT_FEATURES,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        checkpoint=[p for p in cfg.MODEL.ACTIVATION_CHECKPOINT.PARTS if p == "stem" or p.startswith("res")],
    )
