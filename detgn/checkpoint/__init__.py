from .detection_checkpoint import (
    DetectionCheckpointer,
    WeightsLoadError,
    format_load_report,
    get_rng_state,
    set_rng_state,
)
from .formats import c2_names_to_detgn, convert_to_detgn, detect_format, load_any_file, torchvision_names_to_detgn
from .paths import WeightsNotFoundError, alias_to_url, resolve_weights_path

__all__ = [k for k in globals() if not k.startswith("_")]
