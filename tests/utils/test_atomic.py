"""detgn/utils/atomic.py: a replaced file is either the old one or the new one, never a mix."""

import os

import pytest

from detgn.utils.atomic import atomic_write, atomic_write_text


def test_success_replaces_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("old")
    atomic_write_text(str(path), "new")
    assert path.read_text() == "new" and os.listdir(tmp_path) == ["config.yaml"]
    with atomic_write(str(tmp_path / "w.bin"), "wb", fsync=False) as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "w.bin").read_bytes() == b"\x00\x01"


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("old")
    with pytest.raises(ValueError, match="not serialisable"):
        with atomic_write(str(path)) as f:
            f.write("half of the new")
            raise ValueError("not serialisable")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(ZeroDivisionError):
        with atomic_write(str(tmp_path / "absent.json")) as f:
            f.write("x")
            1 / 0
    assert not (tmp_path / "absent.json").exists() and os.listdir(tmp_path) == ["results.json"]
