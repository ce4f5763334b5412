"""Deploy a trained model: TorchScript / ONNX export and predictors for the exported files.

Importing `detgn.export` loads nothing heavy: `OnnxPredictor` and the numpy post-processing run
where only numpy, OpenCV and onnxruntime are installed; the exporter (which needs torch) is
imported on first use of `export_model`, `check_exportable` or `ExportableModel`.
"""

from .postprocess import paste_masks, resize_for_model, resized_size, to_original_size
from .predictors import OnnxPredictor, TorchScriptPredictor, check_config_matches, read_export_metadata

__all__ = [
    "OnnxPredictor",
    "TorchScriptPredictor",
    "check_config_matches",
    "read_export_metadata",
    "export_model",
    "check_exportable",
    "check_export_output",
    "ExportError",
    "ExportableModel",
    "paste_masks",
    "resize_for_model",
    "resized_size",
    "to_original_size",
]

_LAZY = {
    "export_model": "exporter",
    "check_exportable": "exporter",
    "check_export_output": "exporter",
    "ExportError": "exporter",
    "ExportableModel": "wrapper",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'detgn.export' has no attribute '{name}'")
