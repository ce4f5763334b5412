"""Config functions: a component keeps its config keys, their defaults, the rules on their values and the values
it does not implement in one place, beside its code, instead of in the central tables.

    @config_function(
        rules={"MODEL.MY_HEAD.DIM": ge(1)},
        relations=[("MY_HEAD with GN needs DIM divisible by the groups", my_head_dim_problem)],
        unsupported={"MODEL.MY_HEAD.EXTRA": "the extra branch of the paper"},
    )
    def add_my_head_config(cfg):
        cfg.MODEL.MY_HEAD = CN()
        cfg.MODEL.MY_HEAD.DIM = 256  # channels of each conv
        cfg.MODEL.MY_HEAD.EXTRA = False  # not implemented: must stay False

Registering (importing the component's module) puts the rules into config/rules.py's tables, so `check_config`
checks them and `python -m detgn.config.rules` lists them under their owner, and the unsupported keys into
supported.py's. `get_cfg()` applies every function registered with `by_default=True` (the built-in ones are
registered when detgn.modeling is imported, which get_cfg does first); a tool's own keys (the classifier's
CLASSIFIER.*) use `by_default=False` and are added by the tool (`add_classifier_config`). A rule on a key that a
config does not have is skipped, so a tool's rules never touch a detector's config.

A new component is then one module (its code, registered in its registry) plus its config function: see
modeling/roi_heads/cascade_rcnn.py.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["config_function", "apply_config_functions", "config_functions", "load_builtin_components"]

_FUNCTIONS: List[Tuple[Callable, bool]] = []  # (function, applied by get_cfg)


def config_function(
    *,
    rules: Optional[Dict[str, object]] = None,
    relations: Sequence[Tuple[str, Callable]] = (),
    unsupported: Optional[Dict[str, str]] = None,
    by_default: bool = True,
):
    """Register the decorated `fn(cfg)` (it adds keys with their defaults to cfg and returns nothing or cfg) with
    its `rules` (key -> rules.Rule), `relations` ((description, check(cfg) -> None or (key, value, allowed))) and
    `unsupported` keys (key -> what detgn does not implement; the key must keep the default fn gives it)."""

    def register(fn: Callable) -> Callable:
        from .rules import register_rules
        from .supported import register_unsupported

        owner = f"{fn.__module__}.{fn.__qualname__}"
        if any(f is fn or f"{f.__module__}.{f.__qualname__}" == owner for f, _ in _FUNCTIONS):
            raise ValueError(f"config function {owner} is registered twice")
        register_rules(dict(rules or {}), list(relations), owner=owner)
        register_unsupported(dict(unsupported or {}), owner=owner)
        _FUNCTIONS.append((fn, by_default))
        return fn

    return register


def config_functions(by_default: Optional[bool] = None) -> List[Callable]:
    """The registered config functions, in registration order (only those get_cfg applies, with by_default=True)."""
    return [f for f, d in _FUNCTIONS if by_default is None or d == by_default]


def apply_config_functions(cfg, by_default: Optional[bool] = True):
    """Add the keys of the registered functions (those get_cfg applies by default; None: all) to cfg; returns cfg."""
    for fn in config_functions(by_default):
        fn(cfg)
    return cfg


def load_builtin_components() -> None:
    """Import the built-in components, so that their config functions are registered."""
    import detgn.engine  # noqa: F401  (EMA, the best checkpoint)
    import detgn.modeling  # noqa: F401
    import detgn.solver  # noqa: F401
