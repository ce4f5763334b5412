from .backbone import BACKBONE_REGISTRY, Backbone, build_backbone
from .fpn import FPN, LastLevelMaxPool, build_resnet_fpn_backbone
from .resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet, build_resnet_backbone

__all__ = [k for k in globals() if not k.startswith("_")]
