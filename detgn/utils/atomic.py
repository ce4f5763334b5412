"""Writes that never leave a half-written file: the one way detgn replaces a file on disk."""

import contextlib
import os
from typing import IO, Iterator

__all__ = ["atomic_write", "atomic_write_text"]


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", fsync: bool = True) -> Iterator[IO]:
    """Yield a file opened with `mode` at `path`.tmp.<pid> (this process's own, beside `path`); when the block
    ends without an error it is flushed, fsync'ed (unless fsync=False) and renamed over `path`. On any error, or a
    kill before the rename, `path` keeps what it had: the temp file is removed (or left with the .tmp name)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str, fsync: bool = True) -> None:
    """Replace the text file at `path` with `text` in one step (atomic_write)."""
    with atomic_write(path, "w", fsync=fsync) as f:
        f.write(text)
