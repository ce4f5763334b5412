"""The package's layers import downwards only: detgn.utils, detgn.structures and detgn.layers (the bottom)
never import detgn.engine, detgn.jobs, detgn.data or detgn.modeling, not even inside a function; job control
(detgn.jobs) builds on the training engine, never the reverse; and no module of either is a room past its
name (over 350 lines)."""

import ast
import os

import pytest

from tests.util import REPO

BOTTOM = ("utils", "structures", "layers")
UPPER = ("engine", "jobs", "data", "modeling")
MAX_LINES = 350


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


def _modules(layer):
    """(path, package) of every module of detgn/<layer>."""
    root = os.path.join(REPO, "detgn", layer)
    for dirpath, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".py"):
                package = "detgn." + os.path.relpath(dirpath, os.path.join(REPO, "detgn")).replace(os.sep, ".")
                yield os.path.join(dirpath, f), package


def _importing(layer, forbidden):
    """'<module> imports <name>' for each import in detgn/<layer> of a package in `forbidden`."""
    return [
        f"{os.path.relpath(path, REPO)} imports {name}"
        for path, package in _modules(layer)
        for name in _imports(path, package)
        if name and any(name == f"detgn.{u}" or name.startswith(f"detgn.{u}.") for u in forbidden)
    ]


@pytest.mark.parametrize("layer", BOTTOM)
def test_bottom_layers_do_not_import_upper_ones(layer):
    bad = _importing(layer, UPPER)
    assert not bad, "; ".join(bad)


def test_the_engine_never_imports_job_control():
    bad = _importing("engine", ("jobs",))
    assert not bad, "; ".join(bad)
    assert _importing("jobs", ("engine",)), "detgn.jobs should build on detgn.engine; has the layout changed?"


@pytest.mark.parametrize("layer", ("engine", "jobs"))
def test_no_module_of_the_engine_or_job_control_is_over_350_lines(layer):
    long = [
        f"{os.path.relpath(path, REPO)}: {n} lines"
        for path, _ in _modules(layer)
        for n in [sum(1 for _ in open(path))]
        if n > MAX_LINES
    ]
    assert not long, f"split these by role: {'; '.join(long)}"


def test_names_that_moved_to_job_control_say_where():
    import detgn.engine
    import detgn.jobs

    for name in ("launch", "default_argument_parser", "setup_cfg"):
        with pytest.raises(ImportError, match=f"moved to detgn.jobs: write `from detgn.jobs import {name}`"):
            exec(f"from detgn.engine import {name}", {})
        assert callable(getattr(detgn.jobs, name))
    from detgn.engine import DefaultTrainer, HookBase, hooks  # detectron2's names that stay  # noqa: F401

    with pytest.raises(AttributeError):
        detgn.engine.no_such_name
