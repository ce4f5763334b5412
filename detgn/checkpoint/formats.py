"""Read a weights file safely (no code runs from it) and convert it to detgn parameter names.

`load_any_file` reads torch checkpoints (weights_only) and Detectron/detectron2 pickles (an allow-list unpickler);
`convert_to_detgn` recognises the format from the content and converts it with that format's converter
(detgn/checkpoint/converters/: detgn, detectron2, caffe2, torchvision, mmdet; one module each).
"""

import logging
import pickle
import os
import re
from typing import Any, Dict, Optional

import torch

from .converters import CONVERTERS, detect_format, get_converter
from .converters.caffe2 import c2_names_to_detgn
from .converters.torchvision import detgn_names_to_torchvision, torchvision_names_to_detgn
from .errors import UnsafePickleError, WeightsFormatError

__all__ = [
    "UnsafePickleError",
    "WeightsFormatError",
    "load_any_file",
    "convert_to_detgn",
    "detect_format",
    "c2_names_to_detgn",
    "torchvision_names_to_detgn",
    "detgn_names_to_torchvision",
]

logger = logging.getLogger(__name__)


# Everything a Detectron (Python 2, protocol 2) or detectron2 .pkl needs: numpy arrays, dtypes and
# scalars, and plain containers. Any other global (os.system, builtins.eval, ...) is refused.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # bytes written by Python 3 with protocol 2
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, f, filename):
        super().__init__(f, encoding="latin1")
        self._filename = filename

    def find_class(self, module, name):
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):  # numpy >= 1.25 dtype classes
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"Refusing to load {self._filename}: it asks for the Python global '{module}.{name}', which a "
            "weights file does not need (only numpy arrays and plain containers are allowed); "
            "loading it could run code. Convert trusted weights with a plain torch.save of tensors"
        )


def _safe_unpickle(filename: str) -> Any:
    with open(filename, "rb") as f:
        return _RestrictedUnpickler(f, filename).load()


def load_any_file(filename: str) -> Any:
    """torch.load(weights_only=True) for torch files; a restricted latin1 unpickler for Detectron/detectron2 .pkl.

    Neither path runs code from the file: a pickle that needs anything but numpy arrays, dtypes
    and plain containers raises UnsafePickleError naming the file and the refused global.
    """
    import warnings
    import zipfile

    try:
        size = os.path.getsize(filename)
    except OSError as e:
        raise WeightsFormatError(f"Cannot read weights file {filename}: {e.strerror}") from None
    if size == 0:
        raise WeightsFormatError(
            f"Weights file {filename} is empty (0 bytes), e.g. an interrupted download or copy; fetch it again"
        )
    with open(filename, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04" or zipfile.is_zipfile(filename)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # plain pickles trigger a protocol warning before failing over
            return torch.load(filename, map_location="cpu", weights_only=True)
    except Exception as torch_error:  # not a (safe) torch file: try the restricted pickle reader
        refused = _refused_global(str(torch_error))
        if (
            refused and not is_zip
        ):  # a plain pickle (Detectron .pkl) or a legacy torch file, whose first pickle is a magic number
            try:
                obj = _safe_unpickle(filename)
            except UnsafePickleError:
                raise
            except Exception:
                obj = None
            if obj is not None and obj != _LEGACY_TORCH_MAGIC:
                return obj
        if refused:
            kind = "torch checkpoint (zip)" if is_zip else "legacy torch checkpoint"
            raise UnsafePickleError(
                f"Refusing to load {filename}: this {kind} asks for the Python global '{refused}', which "
                "weights do not need; loading it could run code. Re-save trusted weights as a plain state "
                "dict of tensors (torch.save(model.state_dict(), path))"
            ) from None
        if is_zip:
            raise WeightsFormatError(
                f"Cannot read weights file {filename}: a torch checkpoint (zip) that torch cannot open "
                f"({_first_sentence(str(torch_error))}); the file is probably truncated or corrupted: "
                "fetch or copy it again"
            ) from None
        try:
            return _safe_unpickle(filename)
        except UnsafePickleError:
            raise
        except Exception as pickle_error:
            raise WeightsFormatError(
                f"Cannot read weights file {filename}: it is neither a torch checkpoint nor a numpy pickle "
                f"({type(pickle_error).__name__}: {_first_sentence(str(pickle_error))}); check the path, or "
                "fetch the file again if it was cut short"
            ) from None


_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of a torch file saved without the zip format


def _refused_global(message: str) -> Optional[str]:
    """The global torch's weights_only unpickler refused, from its error message (None if it was not that)."""
    m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", message)
    return m.group(1) if m else None


def _first_sentence(message: str) -> str:
    """The first line of an error, without torch's advice about weights_only=False (never an option here)."""
    line = next(
        (l for l in message.splitlines() if l.strip() and "weights_only" not in l),
        message.splitlines()[0] if message else "",
    )
    return line.split(". This is an internal")[0].strip().rstrip(".")


def _model_prefix(model_keys, suffix: str) -> Optional[str]:
    for k in model_keys:
        if k.endswith(suffix):
            return k[: -len(suffix)]
    return None


def _check_containers(obj: Any, source: str) -> None:
    """The dicts the formats read tensors from ('model', 'state_dict', 'blobs', or the file itself) must be dicts
    keyed by names: a list or a string there is a file of another kind, refused in one line."""
    where = source or "the weights file"
    if not isinstance(obj, dict):
        raise WeightsFormatError(
            f"{where} holds a {type(obj).__name__}, not a dict of named tensors; not a weights file"
        )
    for key in ("model", "state_dict", "blobs"):
        if key in obj and not isinstance(obj[key], dict):
            raise WeightsFormatError(
                f"{where}: its '{key}' entry is a {type(obj[key]).__name__}, not a dict of named tensors; not a weights "
                "file detgn can read (a detectron2 .pkl holds {'model': {name: array}})"
            )
    tensors = next((obj[k] for k in ("model", "state_dict", "blobs") if k in obj), obj)
    bad = next((k for k in tensors if not isinstance(k, str)), None)
    if bad is not None:
        raise WeightsFormatError(
            f"{where}: tensor names must be strings, found the key {bad!r} ({type(bad).__name__}); not a weights file"
        )


def __getattr__(name):
    if name == "FORMATS":  # the registered formats, as they are now
        return tuple(c.name for c in CONVERTERS)
    raise AttributeError(name)


def convert_to_detgn(
    obj: Any, model_state_dict: Dict[str, torch.Tensor], source: str = "", fmt: Optional[str] = None
) -> Dict[str, Any]:
    """-> {"model": detgn-named tensors, "format": name, ...other checkpoint entries (detgn format)}.
    `fmt` (a registered format's name) overrides the format recognised from the content (converters/)."""
    _check_containers(obj, source)
    detected = detect_format(obj)
    if fmt is not None and get_converter(fmt) is None:
        names = ", ".join(c.name for c in CONVERTERS)
        raise WeightsFormatError(f"unknown weights format '{fmt}'; choose one of {names}")
    if fmt == "mmdet" and detected != "mmdet":
        sd = obj.get("state_dict", obj) if isinstance(obj, dict) else {}
        raise WeightsFormatError(
            f"{source or 'the weights file'} is not an mmdetection detector (no backbone.layer1.* with "
            f"neck.* / rpn_head.* / roi_head.* keys; first keys: {', '.join(list(sd)[:3])}); "
            f"its content looks like '{detected}'"
        )
    converter = get_converter(fmt or detected)
    prefix = _model_prefix(model_state_dict.keys(), "stem.conv1.weight") or ""
    out = converter.convert(obj, prefix)
    if converter.note:
        logger.info(converter.note)
    out["format"] = converter.name
    return out
