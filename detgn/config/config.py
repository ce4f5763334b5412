"""fvcore CfgNode with detgn's error messages for unknown keys, safe YAML and _BASE_ cycle detection."""

import difflib
import os
import threading

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from detgn.utils.errors import UserInputError

__all__ = ["CfgNode", "ConfigKeyError", "UnsafeConfigError", "CircularBaseError"]


class UnsafeConfigError(UserInputError, ValueError):
    """A YAML config uses a tag that would construct Python objects (e.g. !!python/object)."""


class ConfigFileError(UserInputError, ValueError):
    """A config file that is not a YAML mapping of keys (empty, a list, a scalar)."""


class CircularBaseError(UserInputError, ValueError):
    """A chain of _BASE_ links comes back to a file already being loaded."""


# The largest config file and the most values (aliases expanded) one may hold: detgn's own are under 5 KB and a
# few hundred values; a bigger file is a mistake (a dataset or log given as --config-file) or an attack (a 430-byte
# YAML alias bomb expands to billions of values), refused before it takes the machine's memory.
MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000

_loading = threading.local()  # stack of config files being loaded, for cycle detection


def get_key(cfg, key: str):
    """The value at a dotted key ("MODEL.RESNETS.NORM") of a config; KeyError when a part is missing."""
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def has_key(cfg, key: str) -> bool:
    """Whether the config has the dotted key."""
    try:
        get_key(cfg, key)
    except (KeyError, TypeError):
        return False
    return True


class ConfigError(UserInputError, ValueError):
    """A config file, override or output directory problem, reported in one line (what setup_cfg raises)."""


class ConfigKeyError(UserInputError, KeyError):
    """A key in a YAML file or an override does not exist; the message names close keys."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


def _all_keys(cfg, prefix=""):
    out = []
    for k, v in cfg.items():
        full = prefix + k
        out.append(full)
        if isinstance(v, _FvCfgNode):
            out.extend(_all_keys(v, full + "."))
    return out


class CfgNode(_FvCfgNode):
    """Config node. Unknown keys fail with `ConfigKeyError` naming the closest valid keys."""

    def _unknown(self, full_key, root):
        if full_key.split(".")[0] == "CLASSIFIER" and "CLASSIFIER" not in root:
            return ConfigKeyError(
                f"Unknown config key '{full_key}': CLASSIFIER.* keys are the image classifier's; train it with "
                "tools/train_classifier.py (from Python: detgn.config.get_classifier_cfg())"
            )
        valid = _all_keys(root)
        close = difflib.get_close_matches(full_key, valid, n=3, cutoff=0.6)
        if not close:  # try matching the last component inside the same parent
            last = full_key.split(".")[-1]
            close = [k for k in valid if difflib.SequenceMatcher(None, k.split(".")[-1], last).ratio() > 0.8][:3]
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else "; run `python -c 'from detgn.config import get_cfg; print(get_cfg())'` to list valid keys"
        )
        return ConfigKeyError(f"Unknown config key '{full_key}'{hint}")

    def _check_keys(self, other, root, prefix=""):
        for k, v in other.items():
            full = prefix + k
            if k not in self:
                if full in ("_BASE_",):
                    continue
                raise self._unknown(full, root)
            if isinstance(v, dict) and isinstance(self[k], _FvCfgNode):
                self[k]._check_keys(v, root, full + ".")

    @classmethod
    def load_yaml_with_base(cls, filename, allow_unsafe: bool = False):
        """fvcore's loader with yaml.safe_load only (unless the caller passes allow_unsafe=True):
        a tag such as !!python/object raises UnsafeConfigError, and a _BASE_ cycle raises
        CircularBaseError naming the chain ("a.yaml -> b.yaml -> a.yaml")."""
        stack = getattr(_loading, "stack", None)
        if stack is None:
            stack = _loading.stack = []
        key = os.path.realpath(filename) if isinstance(filename, str) and "://" not in filename else filename
        if key in stack:
            chain = stack[stack.index(key) :] + [key]
            raise CircularBaseError("circular _BASE_: " + " -> ".join(os.path.basename(str(p)) for p in chain))
        if isinstance(filename, str) and os.path.isfile(filename) and os.path.getsize(filename) > MAX_CONFIG_BYTES:
            raise ConfigFileError(
                f"{filename}: {os.path.getsize(filename) / 2**20:.1f} MB is not a config (at most "
                f"{MAX_CONFIG_BYTES >> 20} MB; detgn's configs are a few KB): check --config-file / _BASE_"
            )
        stack.append(key)
        try:
            loaded = super().load_yaml_with_base(filename, allow_unsafe=allow_unsafe)
            _check_expanded_size(loaded, filename)
            return loaded
        except TypeError as e:  # fvcore looks for _BASE_ in what safe_load returned: None for an empty file
            if "is not iterable" not in str(e):
                raise
            if "NoneType" in str(e):
                raise ConfigFileError(
                    f"{filename}: the file is empty; a config is a YAML mapping of keys (e.g. 'SOLVER:')"
                ) from None
            got = str(e).split("'")[1] if "'" in str(e) else "a scalar"
            raise ConfigFileError(
                f"{filename}: the top level must be a mapping of config keys (e.g. 'SOLVER:'), got {got}"
            ) from None
        except yaml.constructor.ConstructorError as e:
            where = f" (line {e.problem_mark.line + 1})" if e.problem_mark is not None else ""
            raise UnsafeConfigError(
                f"{filename}{where}: {e.problem}; detgn reads configs with yaml.safe_load and never "
                "builds Python objects from a config file: write plain values instead"
            ) from None
        finally:
            stack.pop()

    def merge_from_file(self, cfg_filename, allow_unsafe=False):
        """Merge a YAML file (following `_BASE_` links) into this config; safe YAML only by default."""
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        if not isinstance(loaded, dict):
            raise ConfigFileError(
                f"{cfg_filename}: the top level must be a mapping of config keys (e.g. 'SOLVER:'), "
                f"got {'an empty file' if loaded is None else type(loaded).__name__}"
            )
        _ints_to_floats(loaded, self)
        loaded = type(self)(loaded)
        self._check_keys(loaded, self)
        self.merge_from_other_cfg(loaded)

    def merge_from_list(self, cfg_list):
        """Merge `KEY VALUE` pairs, e.g. ["SOLVER.BASE_LR", "0.02"]."""
        if len(cfg_list) % 2 != 0:
            raise ValueError(f"Config overrides must be KEY VALUE pairs, got an odd number: {cfg_list}")
        cfg_list = list(cfg_list)
        for i, key in enumerate(cfg_list[0::2]):
            node = self
            for part in key.split("."):
                if not isinstance(node, _FvCfgNode) or part not in node:
                    raise self._unknown(key, self)
                node = node[part]
            if isinstance(node, float) and isinstance(cfg_list[2 * i + 1], str):
                try:  # "0" or "1" for a float key is that number, not a type error
                    cfg_list[2 * i + 1] = repr(float(int(cfg_list[2 * i + 1])))
                except ValueError:
                    pass
        return super().merge_from_list(cfg_list)


def _check_expanded_size(loaded, filename) -> None:
    """Refuse a loaded YAML whose values, with every alias expanded, exceed MAX_CONFIG_VALUES. Counted over the
    shared nodes (memoised by identity), so an alias bomb is measured without being expanded."""
    memo = {}

    def size(x, depth=0):
        if depth > 100:
            raise ConfigFileError(f"{filename}: values nested more than 100 levels deep; a config is a few levels")
        if not isinstance(x, (list, tuple, dict)):
            return 1
        if id(x) in memo:
            return memo[id(x)]
        items = x.values() if isinstance(x, dict) else x
        n = 1
        for item in items:
            n += size(item, depth + 1)
            if n > MAX_CONFIG_VALUES:
                break
        memo[id(x)] = n
        return n

    n = size(loaded)
    if n > MAX_CONFIG_VALUES:
        raise ConfigFileError(
            f"{filename}: more than {MAX_CONFIG_VALUES} values once YAML aliases are expanded; a config holds a few "
            "hundred (an alias bomb, or a data file given as a config?)"
        )


def _ints_to_floats(loaded: dict, defaults) -> None:
    """In a loaded YAML dict, an integer given for a key whose default is a float becomes that float."""
    for k, v in loaded.items():
        if k not in defaults:
            continue
        if isinstance(v, dict) and isinstance(defaults[k], _FvCfgNode):
            _ints_to_floats(v, defaults[k])
        elif isinstance(defaults[k], float) and isinstance(v, int) and not isinstance(v, bool):
            loaded[k] = float(v)
