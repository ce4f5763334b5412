"""Validated dataset records cached between runs, built once per machine.

`cached_records(name, build, inputs)` returns the records of a dataset as a RecordList over a record
file in the cache folder (`DETGN_CACHE_DIR`, default `~/.cache/detgn/records`). The file is named by
the first input file and a hash of the input paths, the loader's version and its options; its header records
the inputs' sizes, modification times and a 64-bit content checksum. While size and mtime are unchanged the
inputs are not even opened; when they changed, the content hash decides (a touched file is reused). The first process to need it (any rank, any machine sharing the folder)
builds it under an exclusive lock on `<file>.lock`; the others wait on the lock and then map the
finished file, so the annotation file is parsed and validated once per machine (once per cluster on
a shared folder), and never again while it is unchanged. A file that fails its checks (size,
checksum, version, key) is reported with a WARNING and rebuilt, never trusted.

`DETGN_RECORD_CACHE=0` turns the cache off (records are then a plain list, built by every process).
"""

import hashlib
import json
import logging
import os
import re
import time
import zlib
from typing import Callable, Dict, List, Sequence, Tuple

from .record_store import RecordList, RecordStore, StoreCorruptError, gc_paused, write_records

__all__ = ["cache_dir", "cache_enabled", "cached_records", "content_hash", "LOADER_VERSION"]

# bump when what the loaders put in a record changes: old cache files then miss and are rebuilt
LOADER_VERSION = "coco-1"

logger = logging.getLogger(__name__)


def cache_dir() -> str:
    return os.environ.get("DETGN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "detgn", "records")


def cache_enabled() -> bool:
    return os.environ.get("DETGN_RECORD_CACHE", "1") not in ("0", "false", "no", "off")


def content_hash(files: Sequence[str]) -> str:
    """A 64-bit checksum (CRC-32 and Adler-32, zlib's C code at GB/s) of the files' bytes and sizes: it tells
    an edited annotation file from a touched or copied one (cache keys, not security: the cache folder is
    the user's own)."""
    crc, adler = 0, 1
    for path in files:
        size = os.path.getsize(path)
        crc = zlib.crc32(f"|{size}|".encode(), crc)
        with open(path, "rb") as f:
            while True:
                block = f.read(1 << 24)
                if not block:
                    break
                crc = zlib.crc32(block, crc)
                adler = zlib.adler32(block, adler)
    return f"{crc:08x}{adler:08x}"


def _stat(files: Sequence[str]) -> List[List[int]]:
    out = []
    for path in files:
        st = os.stat(path)
        out.append([st.st_size, st.st_mtime_ns])
    return out


def _open_valid(path: str, files: Sequence[str]):
    """The store at `path` if it is complete and made from the current `files`: same size and mtime as when
    it was built (then the inputs are not even opened), or, when those changed, the same content hash.
    None if absent; a WARNING and None if broken."""
    if not os.path.exists(path):
        return None
    try:
        store = RecordStore(path, verify=True)
    except StoreCorruptError as e:
        logger.warning("Record cache %s is not usable (%s); rebuilding it", path, e)
        return None
    try:
        made_from = json.loads(store.key)
    except ValueError:
        logger.warning("Record cache %s has no valid key; rebuilding it", path)
        return None
    if made_from.get("stat") == _stat(files):
        return store
    if made_from.get("content") == content_hash(files):  # touched or copied, same bytes
        return store
    logger.info("Record cache %s was made from another version of %s; rebuilding it", path, ", ".join(files))
    return None


def cached_records(
    name: str, build: Callable[[], Tuple[List[Dict], Dict]], inputs: Sequence[str], options: Sequence = ()
):
    """(records, metadata): a RecordList from the cache, built with `build()` -> (records, metadata) when
    the cache has no valid file for `inputs` + `options`. With the cache off: build()'s own list."""
    if not cache_enabled():
        return build()
    inputs = [os.path.realpath(p) for p in inputs]
    ident = hashlib.blake2b(repr((LOADER_VERSION, tuple(inputs), tuple(options))).encode(), digest_size=10).hexdigest()
    folder = cache_dir()
    stem = (
        os.path.splitext(os.path.basename(inputs[0]))[0] if inputs else name
    )  # named by its input: shared by every dataset name
    path = os.path.join(folder, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{ident}.rec")
    store = _open_valid(path, inputs)
    if store is None:
        os.makedirs(folder, exist_ok=True)
        with open(path + ".lock", "a+") as lock:
            try:
                import fcntl

                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # the first process builds; the others wait here
            except (ImportError, OSError):
                pass
            store = _open_valid(path, inputs)  # built by another process while this one waited
            if store is None:
                started = time.perf_counter()
                stat_before = _stat(inputs)
                key = json.dumps(
                    {
                        "stat": stat_before,
                        "content": content_hash(inputs),
                        "version": LOADER_VERSION,
                        "options": [str(o) for o in options],
                    }
                )
                with gc_paused():  # the records are dropped before the GC resumes: it never scans them
                    records, metadata = build()
                    write_records(path, records, metadata=metadata, key=key)
                    count = len(records)
                    del records
                logger.info(
                    "Cached the %d validated records of %s in %s (%.1f s)",
                    count,
                    name,
                    path,
                    time.perf_counter() - started,
                )
                store = RecordStore(path, verify=False)
    return RecordList([store]), store.metadata
