"""The optimizer: SGD with momentum or AdamW over parameter groups, with optional gradient clipping.

Each trainable parameter gets its learning rate and weight decay from its role, then from where it sits:

- weight decay: norm layers' parameters (GN, BN, ...) SOLVER.WEIGHT_DECAY_NORM (0 by default: the GN paper finds
  decaying GN's gamma/beta hurts detection); nn.Embedding weights SOLVER.WEIGHT_DECAY_EMBED; other biases
  SOLVER.WEIGHT_DECAY_BIAS (None: WEIGHT_DECAY); everything else SOLVER.WEIGHT_DECAY;
- learning rate: SOLVER.BASE_LR, times SOLVER.BIAS_LR_FACTOR for biases outside norm layers;
- the backbone's bottom-up network (the ResNet: `backbone.bottom_up` under an FPN, `backbone` otherwise) multiplies
  both by SOLVER.BACKBONE_LR_FACTOR and SOLVER.BACKBONE_WEIGHT_DECAY_FACTOR (mmdetection's `paramwise_cfg`
  `custom_keys={"backbone": {"lr_mult": ...}}`, which excludes the neck likewise).

Parameters with the same values share one group; the groups are logged once when training starts, with their
parameter counts. SGD uses SOLVER.MOMENTUM / NESTEROV; AdamW (decoupled weight decay, torch.optim.AdamW) uses
SOLVER.ADAMW.BETAS / EPS; the keys of the other optimizer must keep their defaults (config rules below).
"""

import logging
from typing import Any, Dict, List, Optional

import torch

from detgn.config.components import config_function
from detgn.config.config import CfgNode as CN
from detgn.config.rules import Rule, between, ge, gt, seq
from detgn.layers import is_norm_module
from detgn.utils.errors import ConfigValueError

__all__ = [
    "add_optimizer_config",
    "get_default_optimizer_params",
    "build_optimizer",
    "clip_gradients",
    "describe_param_groups",
    "optimizer_kind",
]

logger = logging.getLogger(__name__)

_SGD_DEFAULTS = {"MOMENTUM": 0.9, "NESTEROV": False}
_ADAMW_DEFAULTS = {"BETAS": (0.9, 0.999), "EPS": 1e-8}


def _other_optimizers_keys(c):
    """Keys that only the optimizer not chosen reads keep their defaults (else they would be accepted and ignored)."""
    s = c.SOLVER
    if s.OPTIMIZER == "AdamW":
        for key, default in _SGD_DEFAULTS.items():
            if s[key] != default:
                return (f"SOLVER.{key}", s[key], f"its default {default} with SOLVER.OPTIMIZER AdamW (an SGD key)")
        return None
    for key, default in _ADAMW_DEFAULTS.items():
        value = tuple(s.ADAMW[key]) if key == "BETAS" else s.ADAMW[key]
        if value != default:
            return (
                f"SOLVER.ADAMW.{key}",
                s.ADAMW[key],
                f"its default {default} with SOLVER.OPTIMIZER {s.OPTIMIZER} (an AdamW key)",
            )
    return None


@config_function(
    rules={
        "SOLVER.OPTIMIZER": Rule(lambda v: v in ("SGD", "AdamW"), "one of 'SGD', 'AdamW'"),
        "SOLVER.ADAMW.BETAS": seq(between(0.0, 1.0, hi_open=True), 2, 2),
        "SOLVER.ADAMW.EPS": gt(0),
        "SOLVER.BACKBONE_LR_FACTOR": ge(0, integer=False),
        "SOLVER.BACKBONE_WEIGHT_DECAY_FACTOR": ge(0, integer=False),
        "SOLVER.WEIGHT_DECAY_EMBED": ge(0, integer=False),
    },
    relations=[("the keys of the optimizer not chosen keep their defaults", _other_optimizers_keys)],
)
def add_optimizer_config(cfg) -> None:
    """SOLVER.OPTIMIZER's choices and the parameter-group multipliers (module docstring)."""
    s = cfg.SOLVER
    s.OPTIMIZER = "SGD"  # "SGD" (SOLVER.MOMENTUM, NESTEROV) or "AdamW" (SOLVER.ADAMW.*)
    s.ADAMW = CN()
    s.ADAMW.BETAS = (0.9, 0.999)  # AdamW's (beta1, beta2)
    s.ADAMW.EPS = 1e-8  # AdamW's epsilon
    s.BACKBONE_LR_FACTOR = 1.0  # LR multiplier of the backbone's bottom-up network (ResNet; not the FPN)
    s.BACKBONE_WEIGHT_DECAY_FACTOR = 1.0  # weight-decay multiplier of the same parameters
    s.WEIGHT_DECAY_EMBED = 0.0  # weight decay of nn.Embedding weights (detectron2's default)


def _backbone_prefix(model: torch.nn.Module) -> Optional[str]:
    """The module name of the bottom-up network: 'backbone.bottom_up' under an FPN, 'backbone' otherwise."""
    names = dict(model.named_modules())
    for prefix in ("backbone.bottom_up", "backbone"):
        if prefix in names:
            return prefix
    return None


def get_default_optimizer_params(
    model: torch.nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    bias_lr_factor: float = 1.0,
    weight_decay_bias: Optional[float] = None,
    *,
    weight_decay_embed: float = 0.0,
    backbone_lr_factor: float = 1.0,
    backbone_weight_decay_factor: float = 1.0,
) -> List[Dict[str, Any]]:
    """Parameter groups (module docstring), merged where lr and weight decay agree; each group also lists its
    parameters' names ("param_names") and its role ("role": e.g. "backbone norm")."""
    if weight_decay_bias is None:
        weight_decay_bias = weight_decay
    backbone = _backbone_prefix(model)
    params, seen = [], set()
    for module_name, module in model.named_modules():
        in_backbone = backbone is not None and (module_name == backbone or module_name.startswith(backbone + "."))
        for name, value in module.named_parameters(recurse=False):
            if not value.requires_grad or value in seen:
                continue
            seen.add(value)
            lr, wd, role = base_lr, weight_decay, "weight"
            if is_norm_module(module):
                wd, role = weight_decay_norm, "norm"
            elif isinstance(module, torch.nn.Embedding):
                wd, role = weight_decay_embed, "embedding"
            elif name == "bias":
                lr, wd, role = base_lr * bias_lr_factor, weight_decay_bias, "bias"
            if in_backbone:
                lr, wd, role = lr * backbone_lr_factor, wd * backbone_weight_decay_factor, f"backbone {role}"
            full = f"{module_name}.{name}" if module_name else name
            params.append({"params": [value], "name": full, "role": role, "lr": lr, "weight_decay": wd})
    return _merge_groups(params)


def _merge_groups(groups):
    """Merge groups with identical hyper-parameters (fewer groups -> faster optimizer step)."""
    merged: Dict[tuple, Dict] = {}
    for g in groups:
        key = (g["lr"], g["weight_decay"])
        if key not in merged:
            merged[key] = {
                "params": [],
                "param_names": [],
                "roles": [],
                "lr": g["lr"],
                "weight_decay": g["weight_decay"],
            }
        merged[key]["params"].extend(g["params"])
        merged[key]["param_names"].append(g["name"])
        if g["role"] not in merged[key]["roles"]:
            merged[key]["roles"].append(g["role"])
    return list(merged.values())


def describe_param_groups(optimizer: torch.optim.Optimizer) -> str:
    """One line per group: its roles, parameter tensors and numbers, lr and weight decay (logged at training start)."""
    lines = [f"Optimizer {optimizer_kind(optimizer.param_groups) or type(optimizer).__name__}, parameter groups:"]
    for i, g in enumerate(optimizer.param_groups):
        n = sum(p.numel() for p in g["params"])
        roles = ", ".join(g.get("roles", ())) or "all"
        lines.append(
            f"  group {i}: {roles}: {len(g['params'])} tensors, {n} parameters, lr {g.get('initial_lr', g['lr']):g}, "
            f"weight decay {g['weight_decay']:g}"
        )
    return "\n".join(lines)


def optimizer_kind(param_groups) -> Optional[str]:
    """'SGD' or 'AdamW' from an optimizer's (or a saved optimizer state's) param groups; None for another kind."""
    if not param_groups:
        return None
    g = param_groups[0]
    if "betas" in g:
        return "AdamW"
    if "momentum" in g:
        return "SGD"
    return None


def clip_gradients(params, clip_type: str, clip_value: float, norm_type: float = 2.0) -> None:
    """detectron2's SOLVER.CLIP_GRADIENTS semantics: "value" clamps every gradient element to
    [-clip_value, clip_value]; "norm" rescales each parameter's gradient separately so that its
    norm is at most clip_value; "full_model" rescales all gradients jointly (one global norm)."""
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, clip_value)
    elif clip_type == "norm":
        for p in params:
            torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)
    elif clip_type == "full_model":
        torch.nn.utils.clip_grad_norm_(params, clip_value, norm_type)
    else:
        raise ConfigValueError(
            f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', got '{clip_type}'"
        )


class _Clipping:
    """Mixed into a torch optimizer: clips the gradients of all its parameters before each step."""

    def __init__(self, params, *, clip_type: str, clip_value: float, norm_type: float, **kwargs):
        """clip_type, clip_value, norm_type: SOLVER.CLIP_GRADIENTS.CLIP_TYPE / CLIP_VALUE / NORM_TYPE (clip_gradients)."""
        if clip_type not in ("value", "norm", "full_model"):
            raise ConfigValueError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', got '{clip_type}'"
            )
        super().__init__(params, **kwargs)
        self._clip = (clip_type, clip_value, norm_type)

    @torch.no_grad()
    def step(self, closure=None):
        all_params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        clip_gradients(all_params, *self._clip)
        return super().step(closure)


class _ClippingSGD(_Clipping, torch.optim.SGD):
    """SGD that clips the gradients before each step."""


class _ClippingAdamW(_Clipping, torch.optim.AdamW):
    """AdamW that clips the gradients before each step."""


def build_optimizer(cfg, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SOLVER.OPTIMIZER over the parameter groups of get_default_optimizer_params; optional gradient clipping."""
    s = cfg.SOLVER
    params = get_default_optimizer_params(
        model,
        s.BASE_LR,
        s.WEIGHT_DECAY,
        s.WEIGHT_DECAY_NORM,
        s.BIAS_LR_FACTOR,
        s.WEIGHT_DECAY_BIAS,
        weight_decay_embed=s.WEIGHT_DECAY_EMBED,
        backbone_lr_factor=s.BACKBONE_LR_FACTOR,
        backbone_weight_decay_factor=s.BACKBONE_WEIGHT_DECAY_FACTOR,
    )
    if s.OPTIMIZER == "AdamW":
        plain, clipping = torch.optim.AdamW, _ClippingAdamW
        kwargs = dict(lr=s.BASE_LR, betas=tuple(s.ADAMW.BETAS), eps=s.ADAMW.EPS, weight_decay=s.WEIGHT_DECAY)
    else:  # SGD, the only other value the rules accept
        plain, clipping = torch.optim.SGD, _ClippingSGD
        kwargs = dict(lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV, weight_decay=s.WEIGHT_DECAY)
    clip = s.CLIP_GRADIENTS
    if clip.ENABLED:
        return clipping(
            params, clip_type=clip.CLIP_TYPE, clip_value=clip.CLIP_VALUE, norm_type=clip.NORM_TYPE, **kwargs
        )
    return plain(params, **kwargs)
