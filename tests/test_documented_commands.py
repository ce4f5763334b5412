"""Every command line the documentation shows for a tool parses with that tool's real argument parser, and its
config file and KEY VALUE overrides merge into a config (no unknown key, no wrong type).

Read: the code blocks (fenced, or indented by 4 spaces) of README.md, GETTING_STARTED.md, MODEL_ZOO.md,
docs/*.md and datasets/README.md, and the docstrings of tools/*.py. A command is the words after
`tools/<name>.py` on one logical line (backslash continuations joined, `# comments` dropped, up to a shell
operator). Synopsis lines with `[optional]` or `<placeholder>` parts are not commands; `CFG` and `$GN` stand
for a config file. Nothing is run: argparse and the config merge only.
"""

import ast
import glob
import os
import re
import shlex

import pytest

from tests.util import REPO, tool_module

DOCS = ["README.md", "GETTING_STARTED.md", "MODEL_ZOO.md", "datasets/README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
)
PLACEHOLDER_CONFIGS = {"CFG", "$GN", "FILE"}
STAND_IN_CONFIG = os.path.join("configs", "nuclei_quickstart.yaml")
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}


def _code_lines(path):
    """(line number, text) of the lines inside code blocks of a markdown file."""
    fenced = False
    for no, line in enumerate(open(os.path.join(REPO, path)), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced or line.startswith("    "):
            yield no, line.rstrip("\n")


def _docstring_lines(path):
    doc = ast.get_docstring(ast.parse(open(os.path.join(REPO, path)).read())) or ""
    return list(enumerate(doc.splitlines(), 1))


def _logical(lines):
    """Join backslash continuations: [(first line number, text)]."""
    out, buf, start = [], "", None
    for no, text in lines:
        start = no if not buf else start
        if text.rstrip().endswith("\\"):
            buf += text.rstrip()[:-1] + " "
            continue
        out.append((start, buf + text))
        buf = ""
    return out


def _starts_a_command(words):
    """The line runs something: after VAR=value assignments, a Python, torchrun or srun (prose mentions are skipped)."""
    rest = [w for w in words if not re.match(r"^[A-Z_][A-Z0-9_]*=", w)]
    return bool(rest) and (
        os.path.basename(rest[0]) in ("python", "python3", "torchrun", "srun", "time") or rest[0] in ("do", "then", "$")
    )


def documented_commands():
    """[(where, tool name, argv)] of every tool command line in the docs and the tools' docstrings."""
    sources = [(p, _code_lines(p)) for p in DOCS if os.path.exists(os.path.join(REPO, p))]
    sources += [
        (os.path.relpath(p, REPO), _docstring_lines(os.path.relpath(p, REPO)))
        for p in sorted(glob.glob(os.path.join(REPO, "tools", "*.py")))
    ]
    found = []
    for path, lines in sources:
        for no, text in _logical(lines):
            if "tools/" not in text or re.search(r"\[[^\]]*\]|<[A-Za-z ]+>|\.\.\.", text):
                continue
            try:
                words = shlex.split(text, comments=True)
            except ValueError:
                continue
            if not _starts_a_command(words):
                continue
            for i, word in enumerate(words):
                m = re.search(r"(?:^|/)tools/(\w+)\.py$", word)
                if not m:
                    continue
                argv = []
                for w in words[i + 1 :]:
                    if w in SHELL_OPERATORS:
                        break
                    argv.append(w)
                found.append((f"{path}:{no}", m.group(1), argv))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_tool_commands():
    tools = {t for _, t, _ in COMMANDS}
    assert len(COMMANDS) >= 40 and {"train_net", "demo", "convert_weights", "export_model", "submit"} <= tools, (
        len(COMMANDS),
        sorted(tools),
    )


def _parse(tool, argv):
    module = tool_module(tool)
    if tool == "submit":
        return module.build_parser().parse_args(argv)
    return module.parse_args(argv)


@pytest.mark.parametrize("where, tool, argv", COMMANDS, ids=[f"{w} {t}" for w, t, _ in COMMANDS])
def test_documented_command_parses_and_its_config_merges(where, tool, argv):
    from detgn.config import get_cfg, get_classifier_cfg

    argv = [STAND_IN_CONFIG if a in PLACEHOLDER_CONFIGS else a for a in argv]
    try:
        args = _parse(tool, argv)
    except SystemExit as e:
        pytest.fail(f"{where}: tools/{tool}.py {' '.join(argv)} is refused by its parser (exit {e.code})")
    if tool == "submit":  # the training arguments after `--` go to train_net
        train_argv = argv[argv.index("--") + 1 :] if "--" in argv else []
        args = _parse("train_net", train_argv)
    config = getattr(args, "config_file", "")
    if config and os.path.exists(os.path.join(REPO, config)):
        # the keys the tool reads: its default_cfg (train_classifier: the classifier's too); convert_weights takes both
        tool_keys = get_classifier_cfg if tool == "convert_weights" else getattr(tool_module(tool), "default_cfg", None)
        cfg = (tool_keys or get_cfg)()
        cfg.merge_from_file(os.path.join(REPO, config))
        opts = list(getattr(args, "opts", []) or [])
        cfg.merge_from_list(opts)  # an unknown key or a wrong type raises
    elif config:
        assert config.startswith(("/", "~", "$")) or not config.endswith(".yaml"), f"{where}: no config file {config}"
