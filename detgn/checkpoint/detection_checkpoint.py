"""DetectionCheckpointer: fvcore's Checkpointer with atomic saves, RNG state, and every weight
format users have (detgn/detectron2 .pth, detectron2 and Detectron .pkl, torchvision/timm ResNets).

Formats are recognised from the file's content (see formats.py); after loading, a report lists
matched keys, keys missing from the file, unused keys, and skipped shape mismatches. A file
where nothing matches the model is an error.
"""

import errno
import os
import random
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
from fvcore.common.checkpoint import Checkpointer

from detgn.utils import comm
from detgn.utils.atomic import atomic_write, atomic_write_text
from detgn.utils.errors import UserInputError

from .formats import convert_to_detgn, load_any_file
from .paths import resolve_weights_path
from .resume import ResumeError, find_resumable

__all__ = ["DetectionCheckpointer", "get_rng_state", "set_rng_state", "WeightsLoadError", "ws_convention_of"]


class WeightsLoadError(UserInputError, RuntimeError):
    """The weights file matched nothing in the model (wrong file or wrong architecture)."""


def get_rng_state() -> Dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) RNG states in a weights_only-loadable form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class DetectionCheckpointer(Checkpointer):
    """Checkpointer(model, save_dir, **checkpointables) that

    - saves atomically (temp file + fsync + rename; `last_checkpoint` updated the same way), so a
      crash mid-save leaves the previous checkpoint and its tag intact;
    - saves only on the main process;
    - loads any supported weight format and prints a load report.
    """

    def __init__(self, model, save_dir: str = "", *, save_to_disk: Optional[bool] = None, **checkpointables):
        is_main = comm.is_main_process()
        super().__init__(
            model, save_dir, save_to_disk=is_main if save_to_disk is None else save_to_disk, **checkpointables
        )
        self.last_report: Optional[Dict[str, List]] = None
        self.weights_format: Optional[str] = None  # None: recognised from the content; else one of formats.FORMATS
        self.use_ema_weights = False  # load a detgn checkpoint's "ema" weights (MODEL_EMA) as the model's

    # ------------------------------------------------------------------ save
    def save(self, name: str, *, tag_last: bool = True, **kwargs: Any) -> None:
        """OUTPUT_DIR/<name>.pth with the model, the checkpointables and `kwargs`; tag_last: it becomes the
        `last_checkpoint` that --resume follows (not for model_best.pth)."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        convention = ws_convention_of(self.model)
        if convention:  # the weight-standardisation formula the weights were trained with (Conv2d docstring)
            data["ws_convention"] = convention
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        os.makedirs(self.save_dir, exist_ok=True)
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        _atomic_torch_save(data, save_file)
        if tag_last:
            self.tag_last_checkpoint(basename)

    def has_checkpoint(self) -> bool:
        """A last_checkpoint tag, or checkpoint files without a usable tag (get_checkpoint_file then explains)."""
        last, problem = find_resumable(self.save_dir)
        return last is not None or problem is not None

    def get_checkpoint_file(self) -> str:
        """The checkpoint last_checkpoint names; ResumeError naming the checkpoints that exist when the tag is
        missing, empty or wrong (instead of silently starting from MODEL.WEIGHTS)."""
        last, problem = find_resumable(self.save_dir)
        if last is None:
            raise ResumeError(problem or f"no checkpoint in {self.save_dir}")
        return last

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), last_filename_basename)

    # ------------------------------------------------------------------ load
    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        if path:
            path = resolve_weights_path(path)
        return super().load(path, checkpointables)

    def load_for_inference(
        self, path: str, allow_partial: bool = False, flag: str = "--allow-partial-weights", *, ema: bool = False
    ):
        """Load the model's weights from `path` (no optimizer or trainer state) for inference: a file that leaves
        parameters of the model unset is refused (checkpoint/inference_weights.py), unless `allow_partial`, which
        warns instead. ema: the file's EMA weights when it has them (engine/ema.py). Returns the load report."""
        from .inference_weights import check_inference_weights

        self.last_report = None
        self.use_ema_weights = ema
        try:
            self.load(path, checkpointables=[])
        finally:
            self.use_ema_weights = False
        report = self.last_report or {"missing": [], "shape_mismatch": [], "unused": []}
        left = check_inference_weights(report, self.model, f"MODEL.WEIGHTS {path}", allow=allow_partial, flag=flag)
        if left:
            self.logger.warning(
                "%s: %d parameters keep their random initialisation (%s); results are not meaningful",
                flag,
                len(left),
                ", ".join(_group_keys(left)[:6]),
            )
        return report

    def _load_file(self, filename: str) -> Dict[str, Any]:
        obj = load_any_file(filename)
        if self.use_ema_weights and isinstance(obj, dict):
            if isinstance(obj.get("ema"), dict):
                self.logger.info("Weights %s: its EMA weights (MODEL_EMA.ENABLED)", filename)
                obj = dict(obj, model=obj["ema"])
            else:
                self.logger.warning("Weights %s has no EMA weights; its model weights are used", filename)
        converted = convert_to_detgn(obj, self.model.state_dict(), source=filename, fmt=self.weights_format)
        self.logger.info("Weights %s: detected format '%s'", filename, converted["format"])
        return converted

    def _load_model(self, checkpoint: Dict[str, Any]) -> "IncompatibleKeys":
        fmt = checkpoint.pop("format", "detgn")
        matched_candidates = set(checkpoint["model"].keys())
        model_keys = set(self.model.state_dict().keys())
        if not (matched_candidates & model_keys):
            raise WeightsLoadError(
                f"None of the {len(matched_candidates)} tensors in the weights file match the model's {len(model_keys)} "
                f"parameters (format '{fmt}'); check MODEL.WEIGHTS and that the config describes the same architecture"
            )
        _check_optimizer_kind(checkpoint, self.checkpointables.get("optimizer"))
        file_convention = "mmcv" if fmt == "mmdet" else checkpoint.pop("ws_convention", None)
        incompatible = super()._load_model(checkpoint)
        if file_convention:
            self._adopt_ws_convention(file_convention, fmt)
        skipped = {k for k, _, _ in incompatible.incorrect_shapes}
        matched = sorted((matched_candidates & model_keys) - skipped)
        missing = [k for k in incompatible.missing_keys if k not in skipped]
        self.last_report = {
            "format": fmt,
            "matched": matched,
            "missing": sorted(missing),
            "unused": sorted(incompatible.unexpected_keys),
            "shape_mismatch": [(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes],
        }
        self.logger.info(format_load_report(self.last_report))
        # reported above in detgn's format; an empty result keeps fvcore from logging it a second time
        return IncompatibleKeys(missing_keys=[], unexpected_keys=[], incorrect_shapes=[])

    def _adopt_ws_convention(self, convention: str, fmt: str) -> None:
        """Weight-standardised convs left on "auto" take the convention the file's weights were trained with;
        an explicit MODEL.WEIGHT_STANDARDIZATION.CONVENTION that differs is kept, with a warning."""
        from detgn.layers import Conv2d

        convs = [m for m in self.model.modules() if isinstance(m, Conv2d) and m.weight_standardization]
        auto = [m for m in convs if m.ws_auto]
        for m in auto:
            m.ws_convention = convention
        if auto:
            self.logger.info(
                "Weight standardisation: %d convs use the '%s' formula of these %s weights "
                "(MODEL.WEIGHT_STANDARDIZATION.CONVENTION auto)",
                len(auto),
                convention,
                fmt,
            )
        other = {m.ws_convention for m in convs if not m.ws_auto} - {convention}
        if other:
            self.logger.warning(
                "These %s weights were trained with the '%s' weight-standardisation formula but "
                "MODEL.WEIGHT_STANDARDIZATION.CONVENTION is '%s': outputs will differ slightly (set it to "
                "auto or %s)",
                fmt,
                convention,
                other.pop(),
                convention,
            )


def _check_optimizer_kind(checkpoint: Dict[str, Any], optimizer) -> None:
    """A resumed optimizer state must be of this run's optimizer (SGD's momentum buffers cannot continue AdamW)."""
    if optimizer is None or not isinstance(checkpoint.get("optimizer"), dict):
        return
    from detgn.solver.optimizer import optimizer_kind

    saved = optimizer_kind(checkpoint["optimizer"].get("param_groups"))
    now = optimizer_kind(optimizer.param_groups)
    if saved and now and saved != now:
        raise WeightsLoadError(
            f"--resume: the checkpoint holds {saved}'s optimizer state but SOLVER.OPTIMIZER is {now}; resume with "
            f"SOLVER.OPTIMIZER {saved}, or start a new run from its weights (MODEL.WEIGHTS and a new OUTPUT_DIR)"
        )


def ws_convention_of(model) -> Optional[str]:
    """The convention of the model's weight-standardised convs (None without any)."""
    from detgn.layers import Conv2d

    found = {m.ws_convention for m in model.modules() if isinstance(m, Conv2d) and m.weight_standardization}
    if len(found) > 1:
        raise ValueError(f"a model mixes weight-standardisation conventions {sorted(found)}")
    return found.pop() if found else None


class IncompatibleKeys(NamedTuple):
    """What Checkpointer._load_model returns (fvcore reads these three fields)."""

    missing_keys: List[str]
    unexpected_keys: List[str]
    incorrect_shapes: List[Tuple[str, Tuple, Tuple]]


def _group_keys(keys) -> List[str]:
    """["a.b.weight", "a.b.bias", "c"] -> ["a.b.{bias, weight}", "c"]: keys grouped by their parent module."""
    groups: Dict[str, List[str]] = {}
    for k in keys:
        parent, _, leaf = k.rpartition(".")
        groups.setdefault(parent, []).append(leaf)
    out = []
    for parent, leaves in groups.items():
        leaves = sorted(leaves)
        if not parent:
            out.extend(leaves)
        elif len(leaves) == 1:
            out.append(f"{parent}.{leaves[0]}")
        else:
            out.append(f"{parent}.{{{', '.join(leaves)}}}")
    return sorted(out)


def format_load_report(report: Dict[str, Any], max_list: int = 12) -> str:
    """A table: matched / missing / unused / shape-mismatch counts and the keys of each group."""

    def grouped(keys):
        items = _group_keys(keys)
        more = f" ... and {len(items) - max_list} more groups" if len(items) > max_list else ""
        return ", ".join(items[:max_list]) + more

    lines = [
        f"Weight loading report (format: {report['format']})",
        f"  {'matched':<16} {len(report['matched']):>6}",
        f"  {'missing in file':<16} {len(report['missing']):>6}   {grouped(report['missing']) if report['missing'] else ''}",
        f"  {'unused in file':<16} {len(report['unused']):>6}   {grouped(report['unused']) if report['unused'] else ''}",
        f"  {'shape mismatch':<16} {len(report['shape_mismatch']):>6}   "
        + ", ".join(f"{k} file{a} != model{b}" for k, a, b in report["shape_mismatch"][:max_list]),
    ]
    return "\n".join(lines)


def _atomic_torch_save(data, path: str) -> None:
    """torch.save to a temp file + fsync + rename. A full disk surfaces as OSError(ENOSPC) naming the file
    (torch's writer reports it as a RuntimeError "[enforce fail ...]"); the temp file is removed."""
    try:
        with atomic_write(path, "wb") as f:
            torch.save(data, f)
    except (RuntimeError, OSError) as e:
        if getattr(e, "errno", None) == errno.ENOSPC or _disk_full(os.path.dirname(path) or "."):
            raise OSError(errno.ENOSPC, f"No space left on device while writing {path}") from e
        raise


def _disk_full(folder: str) -> bool:
    try:
        st = os.statvfs(folder)
        return st.f_bavail * st.f_frsize < 2**20
    except OSError:
        return False
