"""The package's layers import downwards only: detgn.utils, detgn.structures and detgn.layers (the bottom)
never import detgn.engine, detgn.data or detgn.modeling, not even inside a function."""

import ast
import os

import pytest

from tests.util import REPO

BOTTOM = ("utils", "structures", "layers")
UPPER = ("engine", "data", "modeling")


def _imports(path, package):
    """Absolute names of every import in the file (relative ones resolved against `package`)."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


@pytest.mark.parametrize("layer", BOTTOM)
def test_bottom_layers_do_not_import_upper_ones(layer):
    bad = []
    root = os.path.join(REPO, "detgn", layer)
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(dirpath, f)
                package = "detgn." + os.path.relpath(dirpath, os.path.join(REPO, "detgn")).replace(os.sep, ".")
                bad += [
                    f"{os.path.relpath(path, REPO)} imports {name}"
                    for name in _imports(path, package)
                    if name and any(name == f"detgn.{u}" or name.startswith(f"detgn.{u}.") for u in UPPER)
                ]
    assert not bad, "; ".join(bad)
