"""Validated dataset records cached between runs, built once per machine.

`cached_records(name, build, inputs)` returns the records of a dataset as a RecordList over a record
file in the cache folder (`DETGN_CACHE_DIR`, default `~/.cache/detgn/records`). The file is named by
the first input file and a hash of the input paths, the loader's version and its options; its header records
the inputs' sizes, modification and change times, inodes and a 64-bit content checksum. While all of those are
unchanged the inputs are not even opened; when any changed (or the file had changed within 2 s of the build, when
a next edit could keep them), the content hash decides: a touched or copied file is reused, an edited one never. The first process to need it (any rank, any machine sharing the folder)
builds it under an exclusive lock on `<file>.lock`; the others wait on the lock and then map the
finished file, so the annotation file is parsed and validated once per machine (once per cluster on
a shared folder), and never again while it is unchanged. A file that fails its checks (size,
checksum, version, key) is reported with a WARNING and rebuilt, never trusted.

`DETGN_RECORD_CACHE=0` (or false/no/off, any case) turns the cache off (records are then a plain list, built by
every process). A cache folder that cannot take the file (read-only, not a folder, full disk) is only a lost
optimisation: one WARNING, and the records stay in memory.
"""

import hashlib
import json
import logging
import os
import re
import time
import zlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from detgn.utils.env import env_flag

from .record_store import RecordList, RecordStore, StoreCorruptError, gc_paused, write_records

__all__ = ["cache_dir", "cache_enabled", "cached_records", "content_hash", "LOADER_VERSION"]

# bump when what the loaders put in a record changes: old cache files then miss and are rebuilt
LOADER_VERSION = "coco-1"

logger = logging.getLogger(__name__)


class _Quiet:
    def warning(self, *a):
        pass

    info = warning


_quiet = _Quiet()


def cache_dir() -> str:
    return os.environ.get("DETGN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "detgn", "records")


def cache_enabled() -> bool:
    """$DETGN_RECORD_CACHE as a yes/no value (on when unset); an unreadable value is refused in one line."""
    return env_flag("DETGN_RECORD_CACHE", True)


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


# A file changed less than this many seconds before its stat was recorded may change again within the same
# timestamp tick (1 s or 2 s on some file systems) without its stat changing: such a stat is never trusted.
RACY_SECONDS = 2.0


def _stat(files: Sequence[str]) -> List[List[int]]:
    """Per file: size, mtime, ctime (ns) and inode. An edit that keeps the size and puts the mtime back (`touch -r`,
    `cp -p`, `rsync -t`, some editors) still moves the ctime, which no user call can set back, or replaces the
    inode."""
    out = []
    for path in files:
        st = os.stat(path)
        out.append([st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return out


def _trusted_stat(files: Sequence[str], now: float) -> Optional[List[List[int]]]:
    """The stat to record for `files` read at time `now`, or None when a file changed so recently (RACY_SECONDS)
    that a next edit could leave its stat as it is: the content hash then decides on every start."""
    stat = _stat(files)
    newest = max((max(s[1], s[2]) for s in stat), default=0) / 1e9
    return None if now - newest < RACY_SECONDS else stat


def _open_valid(path: str, files: Sequence[str], report: bool = True):
    """The store at `path` if it is complete, every byte checked, and made from the current `files`: the same
    size, mtime, ctime and inode as when it was built (the inputs are then not opened), or, when those changed
    or were recorded too soon after an edit, the same content hash. None if absent; a WARNING (when `report`) and None if broken."""
    log = logger if report else _quiet
    if not os.path.isfile(path):
        return None
    try:
        store = RecordStore(path, verify=True)
    except StoreCorruptError as e:
        log.warning("Record cache %s is not usable (%s); rebuilding it", path, e)
        return None
    try:
        made_from = json.loads(store.key)
    except ValueError:
        log.warning("Record cache %s has no valid key; rebuilding it", path)
        return None
    if made_from.get("stat") is not None and made_from.get("stat") == _stat(files):
        return store
    if made_from.get("content") == content_hash(files):  # touched or copied, same bytes
        return store
    log.info("Record cache %s was made from another version of %s; rebuilding it", path, ", ".join(files))
    return None


def _fallback(name: str, folder: str, why: str, records=None, metadata=None):
    logger.warning(
        "Record cache folder %s cannot be used (%s): the records of %s stay in this process's memory; set "
        "DETGN_CACHE_DIR to a writable folder, or DETGN_RECORD_CACHE=0 to silence this",
        folder,
        why,
        name,
    )
    return records, metadata


def _why(e: OSError) -> str:
    return f"{type(e).__name__}: {e.strerror or e}" if isinstance(e, OSError) else str(e)


def cached_records(
    name: str, build: Callable[[], Tuple[List[Dict], Dict]], inputs: Sequence[str], options: Sequence = ()
):
    """(records, metadata): a RecordList from the cache, built with `build()` -> (records, metadata) when
    the cache has no valid file for `inputs` + `options`. With the cache off: build()'s own list. A valid file
    in a read-only folder is used as it is (no lock); a folder that cannot take a new file (read-only, not a
    folder, full disk, file size limit) gives one WARNING and build()'s list, leaving no partial file."""
    if not cache_enabled():
        return build()
    inputs = [os.path.realpath(p) for p in inputs]
    ident = hashlib.blake2b(repr((LOADER_VERSION, tuple(inputs), tuple(options))).encode(), digest_size=10).hexdigest()
    folder = cache_dir()
    stem = (
        os.path.splitext(os.path.basename(inputs[0]))[0] if inputs else name
    )  # named by its input: shared by every dataset name
    path = os.path.join(folder, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{ident}.rec")
    try:
        store = _open_valid(path, inputs, report=False)  # reported under the lock, when it is rebuilt
    except OSError as e:  # a cache file that exists but cannot be read (permissions)
        logger.warning("Record cache %s cannot be read (%s); it is not used", path, _why(e))
        store = None
    if store is not None:
        return RecordList([store]), store.metadata
    try:
        os.makedirs(folder, exist_ok=True)
        lock = open(path + ".lock", "a+")
    except OSError as e:
        _fallback(name, folder, _why(e))
        return build()
    with lock:
        try:
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # the first process builds; the others wait here
        except (ImportError, OSError):
            pass
        store = _open_valid(path, inputs)  # built by another process while this one waited
        if store is None:
            records, metadata = _build_and_write(name, build, inputs, options, path, folder)
            if records is not None:  # the folder could not take the file
                return records, metadata
            store = RecordStore(path, verify=False)
    return RecordList([store]), store.metadata


def _build_and_write(name, build, inputs, options, path, folder):
    """Build the records and write them to `path`: (None, None) when written, else the records and metadata
    (after one WARNING) when the file could not be written. Ctrl-C says what was stopped and that no file was left."""
    started = time.perf_counter()
    key = json.dumps(
        {
            "stat": _trusted_stat(inputs, time.time()),
            "content": content_hash(inputs),
            "version": LOADER_VERSION,
            "options": [str(o) for o in options],
        }
    )
    records = metadata = None
    try:
        with gc_paused():  # the records are dropped before the GC resumes: it never scans them
            records, metadata = build()
            write_records(path, records, metadata=metadata, key=key)
            count = len(records)
            records = None
    except KeyboardInterrupt:
        logger.warning(
            "Interrupted while %s the record cache of %s; no partial file was left in %s",
            "writing" if records is not None else "building",
            name,
            folder,
        )
        raise
    except OSError as e:
        if records is None:  # reading the inputs failed: not a cache problem
            raise
        return _fallback(name, folder, _why(e), records, metadata)
    logger.info(
        "Cached the %d validated records of %s in %s (%.1f s)", count, name, path, time.perf_counter() - started
    )
    return None, None
