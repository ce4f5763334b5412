"""Configs of absurd size are refused before they take the machine's memory, and no error message prints a value
whole; a test dataset listed twice is refused."""

import time

import pytest

from detgn.config import get_cfg
from detgn.config.config import MAX_CONFIG_BYTES
from detgn.config.rules import check_config
from detgn.utils.errors import ConfigValueError, UserInputError, short_repr


def _bomb(levels=9, width=9, base=None):
    lines = [f"{base}" if base else "", "l0: &l0 [" + ",".join(['"x"'] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_refused_quickly(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    assert path.stat().st_size < 500
    started = time.monotonic()
    with pytest.raises(UserInputError, match="aliases are expanded") as e:
        get_cfg().merge_from_file(str(path))
    assert time.monotonic() - started < 30 and len(str(e.value)) < 400


def test_alias_bomb_inside_a_known_key_never_printed_whole():
    """Below the expansion bound (9^5 values) but no valid value: the rules refuse it, and the message is short."""
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = [[["x"] * 9] * 9] * 9  # what the alias YAML builds: shared nested lists
    with pytest.raises(ConfigValueError) as e:
        check_config(cfg)
    assert "INPUT.MIN_SIZE_TRAIN" in str(e.value) and len(str(e.value)) < 600


def test_huge_config_file_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    with open(path, "w") as f:
        f.write("SOLVER:\n  STEPS: [")
        f.write("1," * (MAX_CONFIG_BYTES // 2 + 10))
        f.write("1]\n")
    started = time.monotonic()
    with pytest.raises(UserInputError, match="is not a config"):
        get_cfg().merge_from_file(str(path))
    assert time.monotonic() - started < 5


def test_short_repr_bounds_everything():
    nested = [[list(range(1000))] * 1000] * 1000
    assert len(short_repr(nested)) <= 160 and len(short_repr("y" * 10**6)) <= 160
    assert short_repr((800, 1333)) == "(800, 1333)"


def test_test_dataset_listed_twice_is_refused():
    cfg = get_cfg()
    cfg.DATASETS.TEST = ("nuclei_mini_val", "nuclei_mini_val")
    with pytest.raises(ConfigValueError, match="nuclei_mini_val is listed twice"):
        check_config(cfg)
    cfg.DATASETS.TEST = ("nuclei_mini_val", "nuclei_mini_train")
    check_config(cfg)


def test_alias_values_in_a_yaml_through_train_net(tmp_path, capsys):
    from tests.util import REPO, tool_module

    value = "&a0 [" + ",".join(['"x"'] * 9) + "]"
    for i in range(1, 5):  # each level: the previous one, anchored where it first appears, then 8 aliases of it
        value = f"&a{i} [{value}, " + ", ".join([f"*a{i - 1}"] * 8) + "]"
    path = tmp_path / "aliases.yaml"  # 9^5 values in a known key, from a file of a few hundred bytes
    path.write_text(f"_BASE_: {REPO}/configs/Base-RCNN-FPN.yaml\nINPUT:\n  MIN_SIZE_TRAIN: {value}\n")
    status = tool_module("train_net").cli(["--config-file", str(path), "OUTPUT_DIR", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and "INPUT.MIN_SIZE_TRAIN" in err and len(err) < 600 and err.count("\n") == 1, err[:2000]
