"""fvcore CfgNode with detgn's error messages for unknown keys."""
import difflib

from fvcore.common.config import CfgNode as _FvCfgNode

__all__ = ["CfgNode", "get_cfg", "ConfigKeyError"]


class ConfigKeyError(KeyError):
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
        valid = _all_keys(root)
        close = difflib.get_close_matches(full_key, valid, n=3, cutoff=0.6)
        if not close:  # try matching the last component inside the same parent
            last = full_key.split(".")[-1]
            close = [k for k in valid if difflib.SequenceMatcher(None, k.split(".")[-1], last).ratio() > 0.8][:3]
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `python -c 'from detgn.config import get_cfg; print(get_cfg())'` to list valid keys"
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

    def merge_from_file(self, cfg_filename, allow_unsafe=True):
        """Merge a YAML file (following `_BASE_` links) into this config."""
        loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        loaded = type(self)(loaded)
        self._check_keys(loaded, self)
        self.merge_from_other_cfg(loaded)

    def merge_from_list(self, cfg_list):
        """Merge `KEY VALUE` pairs, e.g. ["SOLVER.BASE_LR", "0.02"]."""
        if len(cfg_list) % 2 != 0:
            raise ValueError(f"Config overrides must be KEY VALUE pairs, got an odd number: {cfg_list}")
        for key in cfg_list[0::2]:
            node = self
            for part in key.split("."):
                if not isinstance(node, _FvCfgNode) or part not in node:
                    raise self._unknown(key, self)
                node = node[part]
        return super().merge_from_list(cfg_list)


def get_cfg() -> CfgNode:
    """A fresh copy of detgn's default config (see defaults.py for every key)."""
    from .defaults import _C

    return _C.clone()

