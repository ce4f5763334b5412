"""The image classifier's config keys (CLASSIFIER.*), added to the detector's defaults by the tools that
train or convert classifiers (tools/train_classifier.py, tools/convert_weights.py), as detectron2's
projects add theirs; a detector's config has none of them.

The classifier is detgn's ResNet backbone (MODEL.RESNETS.*, MODEL.META_ARCHITECTURE "ImageNetClassifier")
trained on ImageFolder-layout data (one folder per class), so its checkpoint loads into the detector by
construction.
"""

from .components import config_function
from .config import CfgNode as CN
from .defaults import get_cfg
from .rules import between, ge, ints

__all__ = ["add_classifier_config", "get_classifier_cfg"]


@config_function(
    rules={
        "CLASSIFIER.NUM_CLASSES": ge(0),
        "CLASSIFIER.EPOCHS": ge(0),
        "CLASSIFIER.LR_STEP_EPOCHS": ints(1, "epochs"),
        "CLASSIFIER.LR_REFERENCE_BATCH": ge(0),
        "CLASSIFIER.TRAIN_CROP": ge(1),
        "CLASSIFIER.MIN_CROP_SCALE": between(0.0, 1.0, lo_open=True),
        "CLASSIFIER.TEST_RESIZE": ge(1),
        "CLASSIFIER.TEST_CROP": ge(1),
    },
    by_default=False,  # tools/train_classifier.py and tools/convert_weights.py add these keys, a detector has none
)
def add_classifier_config(cfg: CN) -> CN:
    """Add the CLASSIFIER.* keys with their defaults to `cfg` (a default detector config, before any file
    or override is merged); returns cfg. Adding them twice changes nothing."""
    if "CLASSIFIER" in cfg:
        return cfg
    c = cfg.CLASSIFIER = CN()
    c.TRAIN_DIR = ""  # ImageFolder root of the training images (TRAIN_DIR/<class>/<image>)
    c.VAL_DIR = ""  # ImageFolder root of the evaluation images (same class folders); "" = no evaluation
    c.NUM_CLASSES = 0  # classifier outputs; 0 = the number of class folders in TRAIN_DIR (else must equal it)
    c.EPOCHS = 0  # > 0: train this many epochs (sets the iterations; SOLVER.MAX_ITER and STEPS must stay unset)
    c.LR_STEP_EPOCHS = (30, 60, 90)  # with EPOCHS > 0: epochs where the LR is multiplied by SOLVER.GAMMA
    c.LR_REFERENCE_BATCH = 256  # BASE_LR is for this many images, scaled linearly to IMS_PER_BATCH; 0: as given
    c.TRAIN_CROP = 224  # RandomResizedCrop output side (pixels)
    c.MIN_CROP_SCALE = 0.08  # RandomResizedCrop smallest crop area (fraction of the image)
    c.TEST_RESIZE = 256  # evaluation: resize the short side to this ...
    c.TEST_CROP = 224  # ... then take the center crop of this side
    c.ZERO_INIT_RESIDUAL = True  # the last norm's gamma of each residual block starts at 0 (as the GN paper)
    return cfg


def get_classifier_cfg() -> CN:
    """The default config with the classifier's keys: get_cfg() + add_classifier_config."""
    return add_classifier_config(get_cfg())
