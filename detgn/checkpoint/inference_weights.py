"""Weights for inference must cover the model: evaluating, exporting or running a detector whose heads were
left at their random initialisation (Mask R-CNN weights in a Cascade config, a file trained for other classes)
gives numbers that look like results and mean nothing. Training from a partial file is normal (ImageNet weights
for the backbone); inference from one is refused unless asked for."""

from typing import Dict, List

from .detection_checkpoint import WeightsLoadError, _group_keys

__all__ = ["PartialWeightsError", "uncovered_parameters", "check_inference_weights", "ALLOW_FLAG"]

ALLOW_FLAG = "--allow-partial-weights"


class PartialWeightsError(WeightsLoadError):
    """Weights that leave parameters of the model at their initial values, refused for inference."""


def uncovered_parameters(report: Dict, model) -> List[str]:
    """The model's parameter names the file did not set: missing from it, or skipped for another shape."""
    params = {n for n, _ in model.named_parameters()}
    skipped = {k for k, _, _ in report.get("shape_mismatch", ())}
    return sorted((set(report.get("missing", ())) | skipped) & params)


def _modules(keys: List[str], depth: int = 3, shown: int = 4) -> str:
    """'roi_heads.box_head.fc1, roi_heads.box_predictor, ...' : the modules the keys belong to."""
    mods = []
    for k in _group_keys(keys):
        m = ".".join(k.split(".")[:depth]).split("{")[0].rstrip(".")
        if m not in mods:
            mods.append(m)
    return ", ".join(mods[:shown]) + (f" and {len(mods) - shown} more" if len(mods) > shown else "")


def likely_cause(report: Dict, keys: List[str]) -> str:
    if report.get("shape_mismatch"):
        k, a, b = report["shape_mismatch"][0]
        return f"the file was trained for another shape (e.g. {k}: file {tuple(a)}, model {tuple(b)}: another NUM_CLASSES?)"
    if report.get("unused"):
        return (
            f"the file holds another architecture ({len(report['unused'])} of its tensors, e.g. "
            f"{_modules(report['unused'], shown=2)}, have no place in this model): use the config the weights were "
            "trained with"
        )
    return "the file holds part of the model only (a backbone or ImageNet file?)"


def check_inference_weights(report: Dict, model, source: str, allow: bool = False, flag: str = ALLOW_FLAG) -> List[str]:
    """Raise PartialWeightsError (one line: the modules left random, the likely cause, the override) when the load
    `report` of `source` left parameters of `model` unset; with `allow`, return their names (the caller warns)."""
    keys = uncovered_parameters(report, model)
    if keys and not allow:
        raise PartialWeightsError(
            f"{source} leaves {len(keys)} parameters of the model at their random initialisation ({_modules(keys)}): "
            f"{likely_cause(report, keys)}; results would be meaningless. Pass {flag} to run it anyway"
        )
    return keys
