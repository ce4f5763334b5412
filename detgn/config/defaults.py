"""Every config key of detgn with its default value and a one-line comment.

Key names follow detectron2's where one exists, so a detectron2 GN YAML loads unchanged.
Defaults are those of detectron2's Base-RCNN-FPN family with frozen BN; the GN configs
in configs/ switch the norms to GN as in Wu & He (2018).
"""

from .config import CfgNode as CN

__all__ = ["get_cfg"]

_C = CN()
_C.VERSION = 2  # config format version (detectron2 compatible)

# ---------------------------------------------------------------------------- model
_C.MODEL = CN()
_C.MODEL.LOAD_PROPOSALS = False  # precomputed proposals are not supported; must stay False
_C.MODEL.MASK_ON = False  # add the mask head (Mask R-CNN)
_C.MODEL.KEYPOINT_ON = False  # keypoint head (not supported; must stay False)
_C.MODEL.DEVICE = "cuda"  # "cuda" or "cpu"; falls back to cpu with a warning when CUDA is absent
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"  # name in META_ARCH_REGISTRY
_C.MODEL.WEIGHTS = ""  # initial weights: path, URL, catalog:// or detectron2:// alias
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]  # per-channel mean in INPUT.FORMAT order
_C.MODEL.PIXEL_STD = [1.0, 1.0, 1.0]  # per-channel std in INPUT.FORMAT order
# layout of images, weights and feature maps: "contiguous" (NCHW) or "channels_last" (NHWC). NHWC
# trains the R50-FPN GN model ~5% faster on CPU (2% for the quick-start model), but its oneDNN
# kernels round differently (FPN features 3.8e-5 vs 4.4e-6 relative to detectron2's), enough to
# reorder near-tied proposals: opt in when speed matters more than bit-level detectron2 parity.
_C.MODEL.MEMORY_FORMAT = "contiguous"  # "contiguous" or "channels_last" (above)

# torch.compile (detgn/modeling/compile.py): which parts, with which torch.compile mode and backend.
# PARTS: any of "backbone", "box_head", "mask_head"; empty = eager. Checkpoints are unchanged by compiling.
_C.MODEL.COMPILE = CN()
_C.MODEL.COMPILE.PARTS = []  # subset of ["backbone", "box_head", "mask_head"]; [] = eager
_C.MODEL.COMPILE.MODE = "default"  # torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune"...
_C.MODEL.COMPILE.BACKEND = "inductor"  # "inductor"; "aot_eager" / "eager" to debug tracing without code generation
# activation checkpointing: recompute these parts' activations in the backward pass instead of keeping them
# (less memory, one more forward of each part; bit-identical gradients). A subset of "stem", "res2".."res5" (each
# block of the stage separately), "fpn" (the top-down pathway), "box_head" and "mask_head" (each tower as a whole);
# frozen parts hold no activations and are refused. detgn/layers/activation_checkpoint.py
_C.MODEL.ACTIVATION_CHECKPOINT = CN()
_C.MODEL.ACTIVATION_CHECKPOINT.PARTS = []  # parts (above) whose activations are recomputed; [] = none

_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"  # name in BACKBONE_REGISTRY
_C.MODEL.BACKBONE.FREEZE_AT = 2  # freeze stem (1) and res2 (2) ...; 0 trains everything

_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32  # groups of every "GN" norm layer
_C.MODEL.GROUP_NORM.EPS = 1e-5  # epsilon of every "GN" norm layer
# "torch": torch's GroupNorm (any device). "triton": detgn's Triton kernels (detgn/layers/fused_group_norm.py),
# CUDA only: GN on the tensor's own layout (no NCHW copies under channels_last) with the following ReLU fused
# in the conv towers; same parameters and checkpoints. Refused where it cannot run.
_C.MODEL.GROUP_NORM.IMPL = "torch"  # "torch" or "triton" (above)

_C.MODEL.WEIGHT_STANDARDIZATION = CN()
_C.MODEL.WEIGHT_STANDARDIZATION.BACKBONE = False  # weight-standardised convs in the ResNet (GN+WS)
_C.MODEL.WEIGHT_STANDARDIZATION.FPN = False  # weight-standardised convs in the FPN
_C.MODEL.WEIGHT_STANDARDIZATION.BOX_HEAD = False  # weight-standardised convs in the box head
_C.MODEL.WEIGHT_STANDARDIZATION.MASK_HEAD = False  # weight-standardised convs in the mask head
_C.MODEL.WEIGHT_STANDARDIZATION.CONVENTION = "auto"  # "timm", "mmcv" (unbiased std + eps) or "auto" (from the weights)

_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.DEPTH = 50  # 18, 34, 50, 101 or 152
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]  # stages returned by the ResNet
_C.MODEL.RESNETS.NUM_GROUPS = 1  # conv groups of the 3x3 (32 for ResNeXt-32xNd)
_C.MODEL.RESNETS.NORM = "FrozenBN"  # "GN", "FrozenBN", "BN", "SyncBN", "NaiveSyncBN", "LN" or ""
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64  # channels per group of the 3x3 in res2
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True  # stride on the first 1x1 (MSRA) instead of the 3x3
_C.MODEL.RESNETS.RES5_DILATION = 1  # dilation of res5 (1 or 2)
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256  # output channels of res2 (64 for R18/R34)
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64  # output channels of the stem
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]  # deformable 3x3 in res2..res5 (R50+)
_C.MODEL.RESNETS.DEFORM_MODULATED = False  # modulated deformable convs (DCNv2: a learned mask per tap)
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1  # offset groups of the deformable convs

_C.MODEL.FPN = CN()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]  # backbone features fed to the FPN
_C.MODEL.FPN.OUT_CHANNELS = 256  # channels of every FPN output
_C.MODEL.FPN.NORM = ""  # norm after lateral and output convs ("GN" in the GN recipe)
_C.MODEL.FPN.FUSE_TYPE = "sum"  # "sum" or "avg" for the top-down merge

_C.MODEL.ANCHOR_GENERATOR = CN()
_C.MODEL.ANCHOR_GENERATOR.NAME = "DefaultAnchorGenerator"  # anchor generator
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]  # anchor sizes per level (pixels)
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]  # height/width ratios, per level or shared
_C.MODEL.ANCHOR_GENERATOR.ANGLES = [[-90, 0, 90]]  # rotated anchors (unused)
_C.MODEL.ANCHOR_GENERATOR.OFFSET = 0.0  # anchor centre offset in units of stride

_C.MODEL.PROPOSAL_GENERATOR = CN()
_C.MODEL.PROPOSAL_GENERATOR.NAME = "RPN"  # name in PROPOSAL_GENERATOR_REGISTRY
_C.MODEL.PROPOSAL_GENERATOR.MIN_SIZE = 0  # drop proposals smaller than this (input pixels)

_C.MODEL.RPN = CN()
_C.MODEL.RPN.HEAD_NAME = "StandardRPNHead"  # name in RPN_HEAD_REGISTRY
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]  # feature maps used by the RPN
_C.MODEL.RPN.BOUNDARY_THRESH = -1  # drop anchors beyond the image by this many pixels; -1 keeps all
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]  # IoU bounds: negative below, positive at or above
_C.MODEL.RPN.IOU_LABELS = [0, -1, 1]  # labels of the IoU intervals
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # anchors sampled per image for the loss
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5  # max fraction of positive sampled anchors
_C.MODEL.RPN.BBOX_REG_LOSS_TYPE = "smooth_l1"  # "smooth_l1" or "giou"
_C.MODEL.RPN.BBOX_REG_LOSS_WEIGHT = 1.0  # weight of loss_rpn_loc
_C.MODEL.RPN.BBOX_REG_WEIGHTS = (1.0, 1.0, 1.0, 1.0)  # box transform weights (dx, dy, dw, dh)
_C.MODEL.RPN.SMOOTH_L1_BETA = 0.0  # smooth-L1 beta; 0 is plain L1
_C.MODEL.RPN.LOSS_WEIGHT = 1.0  # weight of both RPN losses
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000  # proposals kept per level before NMS (training)
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000  # proposals kept per level before NMS (inference)
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000  # proposals kept per image after NMS (training)
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000  # proposals kept per image after NMS (inference)
_C.MODEL.RPN.NMS_THRESH = 0.7  # NMS IoU threshold for proposals
_C.MODEL.RPN.CONV_DIMS = [-1]  # channels of the shared head convs; -1 = input channels

_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.NAME = "StandardROIHeads"  # name in ROI_HEADS_REGISTRY
_C.MODEL.ROI_HEADS.NUM_CLASSES = 80  # foreground classes (background is extra, last index)
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]  # feature maps pooled by the ROI heads
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]  # foreground IoU threshold
_C.MODEL.ROI_HEADS.IOU_LABELS = [0, 1]  # labels of the IoU intervals
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # ROIs sampled per image for the losses
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25  # max fraction of foreground ROIs
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05  # minimum score of a detection
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5  # per-class NMS IoU threshold at inference
_C.MODEL.ROI_HEADS.PROPOSAL_APPEND_GT = True  # add ground-truth boxes to the proposals in training

_C.MODEL.ROI_BOX_HEAD = CN()
_C.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"  # name in ROI_BOX_HEAD_REGISTRY
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE = "smooth_l1"  # "smooth_l1" or "giou"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT = 1.0  # weight of loss_box_reg
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # box transform weights
_C.MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA = 0.0  # smooth-L1 beta; 0 is plain L1
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7  # ROIAlign output size
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # ROIAlign samples per bin; 0 = adaptive
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"  # "ROIAlignV2" (aligned) or "ROIAlign"
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2  # fully connected layers of the box head
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024  # width of the fc layers
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0  # 3x3 convs before the fcs (4 in the GN "4conv1fc" head)
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256  # channels of the head convs
_C.MODEL.ROI_BOX_HEAD.NORM = ""  # norm after each head conv ("GN" in the GN recipe)
_C.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False  # one box regressor for all classes
_C.MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES = False  # mask head trained on predicted boxes (unsupported)
_C.MODEL.ROI_BOX_HEAD.USE_FED_LOSS = False  # federated loss (unsupported)
_C.MODEL.ROI_BOX_HEAD.USE_SIGMOID_CE = False  # sigmoid classification loss (unsupported)

_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"  # name in ROI_MASK_HEAD_REGISTRY
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # ROIAlign output size
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0  # ROIAlign samples per bin; 0 = adaptive
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"  # "ROIAlignV2" (aligned) or "ROIAlign"
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4  # 3x3 convs of the mask head
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256  # channels of the mask head convs
_C.MODEL.ROI_MASK_HEAD.NORM = ""  # norm after each mask head conv ("GN" in the GN recipe)
_C.MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK = False  # one mask channel for all classes

# semantic segmentation head of PanopticFPN (modeling/meta_arch/semantic_seg.py; detectron2's keys and defaults)
_C.MODEL.SEM_SEG_HEAD = CN()
_C.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"  # name in SEM_SEG_HEADS_REGISTRY
_C.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]  # FPN levels it reads
_C.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255  # label of pixels without a class (no loss)
_C.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 54  # stuff classes + 1 ("any thing" is class 0 in detectron2's panoptic data)
_C.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128  # channels of its 3x3 convs
_C.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4  # stride every level is upsampled to before the sum
_C.MODEL.SEM_SEG_HEAD.NORM = "GN"  # norm after each conv (detectron2's default: GN)
_C.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0  # weight of its per-pixel cross-entropy

_C.MODEL.PANOPTIC_FPN = CN()
_C.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 1.0  # weight of the ROI heads' losses (box and mask), not the RPN's
_C.MODEL.PANOPTIC_FPN.COMBINE = CN()
_C.MODEL.PANOPTIC_FPN.COMBINE.ENABLED = True  # add "panoptic_seg" (instances + stuff) to the inference outputs
_C.MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH = 0.5  # an instance overlapping kept ones by more is dropped
_C.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 4096  # stuff regions smaller than this (pixels) are dropped
_C.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = 0.5  # instances below this score are left out

# ---------------------------------------------------------------------------- input
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # short-side sizes for training
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"  # "choice" from the list or "range" [min, max]
_C.INPUT.MAX_SIZE_TRAIN = 1333  # long-side cap in training
_C.INPUT.MIN_SIZE_TEST = 800  # short side at inference; 0 disables resizing
_C.INPUT.MAX_SIZE_TEST = 1333  # long-side cap at inference
# which library resizes uint8 images (every resize from the config: training, test, test-time augmentation,
# DefaultPredictor): "opencv" (bilinear, detgn's default) or "pil" (Pillow's bilinear, detectron2's: its inputs
# pixel for pixel; outputs then match detectron2 also where images are resized). Exported models need "opencv".
_C.INPUT.RESIZE_LIBRARY = "opencv"  # "opencv" or "pil"
_C.INPUT.RANDOM_FLIP = "horizontal"  # "horizontal", "vertical" or "none"
_C.INPUT.FORMAT = "BGR"  # channel order the model expects: "BGR" or "RGB"
_C.INPUT.MASK_FORMAT = "polygon"  # "polygon" or "bitmask" ground-truth masks
_C.INPUT.CROP = CN()
_C.INPUT.CROP.ENABLED = False  # random crop in training
_C.INPUT.CROP.TYPE = "relative_range"  # "relative_range", "relative" or "absolute"
_C.INPUT.CROP.SIZE = [0.9, 0.9]  # crop size, meaning depends on TYPE
_C.INPUT.LSJ = CN()
_C.INPUT.LSJ.ENABLED = False  # large-scale jitter instead of ResizeShortestEdge
_C.INPUT.LSJ.MIN_SCALE = 0.1  # smallest random scale of large-scale jitter
_C.INPUT.LSJ.MAX_SCALE = 2.0  # largest random scale of large-scale jitter
_C.INPUT.LSJ.IMAGE_SIZE = 1024  # output square size of large-scale jitter (pixels)

# ---------------------------------------------------------------------------- datasets
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()  # registered dataset names for training
_C.DATASETS.TEST = ()  # registered dataset names for evaluation
_C.DATASETS.PROPOSAL_FILES_TRAIN = ()  # precomputed proposals (unsupported)
_C.DATASETS.PROPOSAL_FILES_TEST = ()  # precomputed proposals (unsupported)
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN = 2000  # unused (precomputed proposals)
_C.DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST = 1000  # unused (precomputed proposals)

# ---------------------------------------------------------------------------- data loader
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4  # data loading processes per training process
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch images of the same orientation together
_C.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"  # "TrainingSampler" or "RepeatFactorTrainingSampler" (LVIS-style)
_C.DATALOADER.REPEAT_THRESHOLD = 0.0  # t of RepeatFactorTrainingSampler: categories in < t of the images repeat
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True  # drop training images without annotations

# ---------------------------------------------------------------------------- solver
_C.SOLVER = CN()
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"  # "WarmupMultiStepLR" or "WarmupCosineLR"
_C.SOLVER.MAX_ITER = 40000  # total training iterations
_C.SOLVER.BASE_LR = 0.001  # learning rate for IMS_PER_BATCH images
_C.SOLVER.BASE_LR_END = 0.0  # final LR of the cosine schedule
_C.SOLVER.MOMENTUM = 0.9  # SGD momentum
_C.SOLVER.NESTEROV = False  # Nesterov momentum
_C.SOLVER.WEIGHT_DECAY = 0.0001  # L2 weight decay
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0  # weight decay of norm parameters (0 for GN, as in the paper)
_C.SOLVER.WEIGHT_DECAY_BIAS = None  # weight decay of biases; None = WEIGHT_DECAY
_C.SOLVER.BIAS_LR_FACTOR = 1.0  # LR multiplier for biases
_C.SOLVER.GAMMA = 0.1  # LR decay factor at each step
_C.SOLVER.STEPS = (30000,)  # iterations where LR is multiplied by GAMMA
_C.SOLVER.NUM_DECAYS = 3  # unused (detectron2 compatibility)
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000  # LR factor at iteration 0 of the warmup
_C.SOLVER.WARMUP_ITERS = 1000  # warmup length in iterations
_C.SOLVER.WARMUP_METHOD = "linear"  # "linear" or "constant"
_C.SOLVER.RESCALE_INTERVAL = False  # unused (detectron2 compatibility)
_C.SOLVER.CHECKPOINT_PERIOD = 5000  # save a checkpoint every this many iterations
_C.SOLVER.MAX_TO_KEEP = 0  # periodic checkpoints kept on disk; 0 keeps all
_C.SOLVER.IMS_PER_BATCH = 16  # images per optimizer step (iteration) summed over all processes
# images per forward/backward on one process; IMS_PER_BATCH / (processes x IMS_PER_DEVICE) micro-batches are
# accumulated per step, each the batch of one process of a larger job (detgn/engine/accumulation.py).
# 0 = IMS_PER_BATCH / processes: one micro-batch, no accumulation
_C.SOLVER.IMS_PER_DEVICE = 0  # images per forward/backward on one process (above); 0 = no accumulation
_C.SOLVER.REFERENCE_WORLD_SIZE = 0  # processes the recipe was written for; 0 = the recipe fits any number
# with REFERENCE_WORLD_SIZE R and W != R processes: "accumulate" keeps the recipe (IMS_PER_BATCH / R images per
# micro-batch, R / W micro-batches per step), "rescale" applies the linear scaling rule (batch, LR and schedule x
# W / R: another recipe), "auto" accumulates unless a norm key names BN/SyncBN (statistics per micro-batch)
_C.SOLVER.REFERENCE_WORLD_SIZE_MODE = "auto"  # "auto", "accumulate" or "rescale" (above)
_C.SOLVER.CLIP_GRADIENTS = CN()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False  # clip gradients
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"  # "value", "norm" (each parameter) or "full_model" (joint norm)
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0  # clip threshold
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0  # p of the norm for "norm" clipping
_C.SOLVER.AMP = CN()
_C.SOLVER.AMP.ENABLED = False  # mixed precision (autocast) for training and evaluation; False = float32
# autocast dtype when ENABLED: "auto" (CPU: bf16 where the CPU has AMX, or AVX-512-BF16 and a bf16 step
# measured faster, once per CPU kind and cached; else float32. CUDA: bf16 where supported, else fp16), "float16"
# (CUDA only, with loss scaling) or "bfloat16" (warns where auto would pick float32). See detgn/engine/precision.py.
_C.SOLVER.AMP.DTYPE = "float16"  # "auto", "float16" or "bfloat16" (above)

# ---------------------------------------------------------------------------- test
_C.TEST = CN()
_C.TEST.EXPECTED_RESULTS = []  # unused (detectron2 compatibility)
_C.TEST.EVAL_PERIOD = 0  # evaluate every this many iterations; 0 = only at the end
_C.TEST.DETECTIONS_PER_IMAGE = 100  # max detections per image
_C.TEST.AUG = CN()
# test-time augmentation (modeling/test_time_augmentation.py): with ENABLED, --eval-only and the evaluation after
# training also evaluate every image at each short side of MIN_SIZES (long side <= MAX_SIZE, pixels), flipped too
# with FLIP, boxes merged by NMS and mask probabilities averaged; reported as bbox_TTA / segm_TTA
_C.TEST.AUG.ENABLED = False  # also evaluate with test-time augmentation
_C.TEST.AUG.MIN_SIZES = (400, 500, 600, 700, 800, 900, 1000, 1100, 1200)  # short sides (pixels)
_C.TEST.AUG.MAX_SIZE = 4000  # long-side cap (pixels)
_C.TEST.AUG.FLIP = True  # each size also flipped horizontally
_C.TEST.PRECISE_BN = CN()
_C.TEST.PRECISE_BN.ENABLED = False  # recompute BN statistics (unsupported)
_C.TEST.PRECISE_BN.NUM_ITER = 200  # iterations for precise BN (unsupported)
# COCOeval implementation: "hotcoco" (Rust; pycocotools' numbers to the last bit, and lvis-api's for LVIS, several
# times faster and smaller: docs/benchmarks.md), "faster_coco_eval" (within an ulp) or "pycocotools" (the reference).
# LVIS datasets are evaluated by hotcoco only (its LVIS mode replaced the unmaintained lvis package)
_C.TEST.EVALUATOR_BACKEND = "hotcoco"  # "hotcoco", "faster_coco_eval" or "pycocotools" (above)
_C.TEST.VIS_PERIOD_IMAGES = 0  # write this many prediction PNGs (input | GT | prediction) after the final evaluation
_C.TEST.VIS_SCORE_THRESH = 0.5  # lowest score drawn in those PNGs

# ---------------------------------------------------------------------------- misc
_C.OUTPUT_DIR = "./output"  # where logs, checkpoints and results are written
_C.SEED = -1  # random seed; negative picks one from time and pid
_C.LOG_PERIOD = 20  # write console/metrics.json/TensorBoard every this many iterations
_C.CUDNN_BENCHMARK = False  # keep False for detection (ROI counts change every step)
_C.VIS_PERIOD = 0  # unused (detectron2 compatibility)
_C.GLOBAL = CN()
_C.GLOBAL.HACK = 1.0  # unused (detectron2 compatibility)


def get_cfg() -> CN:
    """A fresh copy of detgn's default config: every key above, and those the components add with their config
    functions (config/components.py; e.g. MODEL.ROI_BOX_CASCADE_HEAD from modeling/roi_heads/cascade_rcnn.py).
    Tools that train other models add their keys to it (detgn.config.add_classifier_config for
    tools/train_classifier.py)."""
    from .components import apply_config_functions, load_builtin_components

    load_builtin_components()
    return apply_config_functions(_C.clone())
