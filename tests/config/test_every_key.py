"""Every config key either does something or refuses to be changed.

- Keys in UNSUPPORTED_KEYS (kept for detectron2 compatibility, not implemented): changing one
  is refused by the CLI's config setup and by build_model, naming the key (VERSION too: only
  detectron2's current format, version 2, is read).
- Every other key must be read by the code: its path (or its last component, read from a
  sub-node such as `h = cfg.MODEL.ROI_BOX_HEAD; h.CONV_DIM`) appears in detgn/ or tools/
  outside defaults.py. This is a static check; the behaviour of most keys has its own test.
"""

import os
import re

import pytest

from detgn.config import UNSUPPORTED_KEYS, UnsupportedConfigError, check_supported, get_cfg, get_classifier_cfg
from detgn.config.config import _FvCfgNode

from tests.util import REPO


def _leaves(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, _FvCfgNode):
            yield from _leaves(v, prefix + k + ".")
        else:
            yield prefix + k, v


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 7
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [value[0]] if value else ["x"])
    raise TypeError(value)


def _set(cfg, key, value):
    *path, last = key.split(".")
    node = cfg
    for p in path:
        node = node[p]
    node[last] = value


@pytest.mark.parametrize("key", sorted(UNSUPPORTED_KEYS))
def test_unsupported_key_is_refused_when_changed(key):
    cfg = get_cfg()
    check_supported(cfg)  # defaults pass
    value = dict(_leaves(cfg))[key]
    _set(cfg, key, _changed(value))
    with pytest.raises(UnsupportedConfigError, match=re.escape(key) + ".*does not implement"):
        check_supported(cfg)


def test_cli_and_build_model_refuse_unsupported_keys(tmp_path):
    import argparse

    from detgn.jobs import ConfigError, setup_cfg
    from detgn.modeling import build_model

    args = argparse.Namespace(config_file="", opts=["TEST.PRECISE_BN.ENABLED", "True"])
    with pytest.raises(ConfigError, match="TEST.PRECISE_BN.ENABLED = True: detgn does not implement precise BN"):
        setup_cfg(args)
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PROPOSAL_GENERATOR.NAME = "PrecomputedProposals"
    with pytest.raises(
        UnsupportedConfigError, match="PROPOSAL_GENERATOR.NAME.*does not implement precomputed proposals"
    ):
        build_model(cfg)
    cfg = get_cfg()
    cfg.TEST.PRECISE_BN.ENABLED = True
    with pytest.raises(UnsupportedConfigError, match="TEST.PRECISE_BN.ENABLED"):
        build_model(cfg)


def _listing_sources():
    """The source of the code that only lists keys outside defaults.py/rules.py/supported.py: each registered config
    function with its decorator (defaults, rules, unsupported keys) and the relations it registers."""
    import inspect

    from detgn.config.components import config_functions
    from detgn.config.rules import OWNERS, RELATIONS

    owners = set(OWNERS.values())
    funcs = config_functions() + config_functions(by_default=False)
    funcs += [fn for d, fn in RELATIONS if OWNERS.get(d) in owners]
    return [inspect.getsource(fn) for fn in funcs]


def _sources():
    """The text of every module of detgn/ and tools/ that can read a key: not the files that only list keys
    (defaults.py, rules.py, supported.py), nor the config functions and relations of the components."""
    listing = {os.path.join(REPO, "detgn", "config", f) for f in ("defaults.py", "rules.py", "supported.py")}
    skipped = _listing_sources()
    assert skipped, "no config function found (the components register theirs when detgn.modeling is imported)"
    text = []
    for top in ("detgn", "tools"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".py") and os.path.join(root, f) not in listing:
                    src = open(os.path.join(root, f)).read()
                    for part in skipped:
                        src = src.replace(part, "")
                    text.append(src)
    return text


def _read_in(key, src):
    """The key is read in `src`: its full path (`cfg.A.B.C`, or "A.B.C" as a string), or its node and leaf together:
    `.B.C` in one expression (as `m.B.C` after `m = cfg.A`), or `x.C` where `x` was assigned the node (`x =
    cfg.A.B`), or the leaf as a string next to the node ("B.C", getattr(cfg.A.B, "C")). A module that names the
    node in one place and a common leaf (NAME, NORM) in another does not count."""
    parts = key.split(".")
    if re.search(rf"\bcfg\.{re.escape(key)}\b", src) or f'"{key}"' in src:
        return True
    if len(parts) < 2:
        return False
    node, last = parts[-2], parts[-1]
    if re.search(rf"\.{re.escape(node)}\.{re.escape(last)}\b", src) or f'"{node}.{last}"' in src:
        return True
    if re.search(rf"\.{re.escape(node)}\b[^\n]{{0,40}}[\"']{re.escape(last)}[\"']", src):
        return True
    aliases = re.findall(rf"\b(\w+)\s*=\s*[\w.]*\.{re.escape(node)}\b(?![.\w(])", src)
    return any(re.search(rf"\b{re.escape(a)}\.{re.escape(last)}\b", src) for a in set(aliases))


def test_every_other_key_is_read_by_the_code():
    sources = _sources()
    unread = [
        key
        for key, _ in _leaves(get_classifier_cfg())
        if key not in UNSUPPORTED_KEYS and not any(_read_in(key, s) for s in sources)
    ]
    assert not unread, f"config keys nothing reads (implement them or add them to UNSUPPORTED_KEYS): {unread}"


def test_read_in_needs_node_and_leaf_together():
    key = "MODEL.ROI_BOX_HEAD.NAME"
    assert _read_in(key, "name = cfg.MODEL.ROI_BOX_HEAD.NAME")
    assert _read_in(key, "m = cfg.MODEL\nname = m.ROI_BOX_HEAD.NAME")
    assert _read_in(key, "h = cfg.MODEL.ROI_BOX_HEAD\nname = h.NAME")
    assert _read_in(key, 'raise ValueError("MODEL.ROI_BOX_HEAD.NAME")')
    # the node in one place and a common leaf elsewhere: not a read of this key
    assert not _read_in(key, "h = cfg.MODEL.ROI_BOX_HEAD\nx = other.NAME")
    assert not _read_in(key, "x = cfg.MODEL.ROI_BOX_HEAD.NORM\ny = cfg.MODEL.RPN.NAME")
