"""Dataset records in one compact, pickle-free file, memory-mapped read-only by every process.

A list of dataset dicts (N images) is written as:

    b"DETGNREC" | u32 version | u64 header length | u32 CRC32 of the header | header (JSON) |
    offsets (N + 1 int64) | height, width, num_instances, num_annotations (N int32 each) |
    data (each record as JSON, back to back)

The header holds N, the metadata of the dataset (class names, id map), the cache key and a CRC32 of
everything after it; its own CRC32 sits before it, so every byte that is read is checked: the header on
every open, the body when opened with `verify=True` (a cache hit).
`RecordStore` maps the file (`numpy.memmap`, read-only): the operating system keeps one copy of its
pages per machine whatever the number of ranks and DataLoader workers reading it, and a worker never
copies them (there are no Python objects to touch, so no copy-on-read). A record is decoded from its
bytes when indexed. Per-image height, width and number of non-crowd instances are plain arrays, so
filtering empty images and aspect-ratio grouping do not decode anything.

JSON (orjson when installed) keeps the file readable by any tool and free of code: loading never runs
anything from it.
"""

import contextlib
import gc
import json
import os
import struct
import zlib
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from detgn.structures import BoxMode
from detgn.utils.atomic import atomic_write
from detgn.utils.errors import UserInputError

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - the standard library does the same, slower
    _orjson = None

__all__ = [
    "RecordStore",
    "RecordList",
    "write_records",
    "gc_paused",
    "StoreCorruptError",
    "STORE_VERSION",
    "dumps",
    "loads",
]

MAGIC = b"DETGNREC"
STORE_VERSION = 2
_PREFIX = struct.Struct("<8sIQI")


class StoreCorruptError(UserInputError, ValueError):
    """A record file that is truncated, altered or of another version (a cache is then rebuilt)."""


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic GC off while millions of acyclic objects (numbers, lists, dicts of a COCO-size file)
    are made and dropped: it would otherwise rescan them again and again (orjson.loads of train2017-size
    json: 5.9 s -> 2.0 s), and once more after they are made, if they are still alive when it resumes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def dumps(obj) -> bytes:
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":")).encode()


def loads(data):
    return _orjson.loads(data) if _orjson is not None else json.loads(data)


def _num_instances(record: Dict) -> int:
    return sum(1 for a in record.get("annotations", ()) if not a.get("iscrowd", 0))


def write_records(path: str, records: Sequence[Dict], metadata: Optional[Dict] = None, key: str = "") -> None:
    """Write `records` (dataset dicts) to `path` atomically (temp file + fsync + rename)."""
    n = len(records)
    chunks = [dumps(r) for r in records]
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.fromiter(map(len, chunks), np.int64, n), out=offsets[1:])
    pos = int(offsets[-1])
    sizes = np.array(
        [
            [r.get("height", 0) for r in records],
            [r.get("width", 0) for r in records],
            [_num_instances(r) for r in records],
            [len(r.get("annotations", ())) for r in records],
        ],
        np.int32,
    ).reshape(4, n)
    body = [offsets.tobytes(), sizes.tobytes()] + chunks
    crc = 0
    for b in body:
        crc = zlib.crc32(b, crc)
    header = dumps({"num_records": n, "metadata": metadata or {}, "key": key, "crc32": crc, "data_bytes": pos})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(_PREFIX.pack(MAGIC, STORE_VERSION, len(header), zlib.crc32(header)))
        f.write(header)
        for b in body:
            f.write(b)


def _fix_record(r: Dict) -> Dict:
    for a in r.get("annotations", ()):
        if "bbox_mode" in a:
            a["bbox_mode"] = BoxMode(a["bbox_mode"])
    return r


class RecordStore:
    """The records of one file, mapped read-only. `store[i]` is a fresh dict (changing it changes nothing
    stored); `store.heights`, `.widths`, `.num_instances` (non-crowd), `.num_annotations` are int32 arrays; `store.metadata` the header's."""

    def __init__(self, path: str, verify: bool = True, expected_key: Optional[str] = None):
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                magic, version, hlen, header_crc = _PREFIX.unpack(f.read(_PREFIX.size))
                if magic != MAGIC or version != STORE_VERSION:
                    raise StoreCorruptError(f"{path}: not a detgn record file of version {STORE_VERSION}")
                if hlen > size:
                    raise StoreCorruptError(
                        f"{path}: header of {hlen} bytes in a file of {size} (truncated or altered)"
                    )
                raw_header = f.read(hlen)
            if zlib.crc32(raw_header) != header_crc:
                raise StoreCorruptError(f"{path}: header checksum mismatch (altered or partly written)")
            header = loads(raw_header)
            n = int(header["num_records"])
            data_bytes = int(header["data_bytes"])
            metadata, crc = header["metadata"], int(header["crc32"])
        except (OSError, struct.error, ValueError, KeyError, TypeError) as e:
            if isinstance(e, StoreCorruptError):
                raise
            raise StoreCorruptError(f"{path}: unreadable record file ({type(e).__name__}: {e})") from None
        start = _PREFIX.size + hlen
        expected = start + 8 * (n + 1) + 4 * 4 * n + data_bytes
        if size != expected:
            raise StoreCorruptError(f"{path}: {size} bytes, {expected} expected (truncated or altered)")
        if expected_key is not None and header.get("key") != expected_key:
            raise StoreCorruptError(f"{path}: made from another input (key {header.get('key')!r})")
        self._map = np.memmap(path, dtype=np.uint8, mode="r")
        if verify and zlib.crc32(self._map[start:]) != crc:
            raise StoreCorruptError(f"{path}: checksum mismatch (altered or partly written)")
        self.num_records = n
        self.metadata = metadata
        self.key = header.get("key", "")
        self._offsets = np.frombuffer(self._map, np.int64, n + 1, start)
        sizes = np.frombuffer(self._map, np.int32, 4 * n, start + 8 * (n + 1)).reshape(4, n)
        self.heights, self.widths, self.num_instances, self.num_annotations = sizes
        self._data_start = start + 8 * (n + 1) + 16 * n

    def __len__(self) -> int:
        return self.num_records

    def raw(self, i: int) -> bytes:
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._map[self._data_start + a : self._data_start + b].tobytes()

    def __getitem__(self, i: int) -> Dict:
        if not -self.num_records <= i < self.num_records:
            raise IndexError(i)
        return _fix_record(loads(self.raw(i % self.num_records)))

    def __getstate__(self):  # DataLoader workers started with spawn map the file again
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"], verify=False)


class RecordList(Sequence):
    """A list-like view of dataset records: one or more RecordStores (concatenated) and an optional index
    array (a filtered subset). Indexing decodes one record; nothing is held per record in Python."""

    def __init__(self, stores: List[RecordStore], indices: Optional[np.ndarray] = None):
        self.stores = list(stores)
        self._starts = np.cumsum([0] + [len(s) for s in self.stores])
        total = int(self._starts[-1])
        self.indices = np.arange(total, dtype=np.int64) if indices is None else np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def _locate(self, j: int):
        s = int(np.searchsorted(self._starts, j, side="right") - 1)
        return self.stores[s], j - int(self._starts[s])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return RecordList(self.stores, self.indices[i])
        store, k = self._locate(int(self.indices[i]))
        return store[k]

    def __iter__(self) -> Iterator[Dict]:
        for i in range(len(self)):
            yield self[i]

    def _column(self, name: str) -> np.ndarray:
        return (
            np.concatenate([getattr(s, name) for s in self.stores])[self.indices]
            if self.stores
            else np.zeros(0, np.int32)
        )

    @property
    def heights(self) -> np.ndarray:
        return self._column("heights")

    @property
    def widths(self) -> np.ndarray:
        return self._column("widths")

    @property
    def num_instances(self) -> np.ndarray:
        return self._column("num_instances")

    @property
    def num_annotations(self) -> np.ndarray:
        return self._column("num_annotations")

    def select(self, mask: np.ndarray) -> "RecordList":
        return RecordList(self.stores, self.indices[np.asarray(mask, bool)])

    def __add__(self, other: "RecordList") -> "RecordList":
        both = RecordList(self.stores + other.stores)
        return RecordList(both.stores, np.concatenate([self.indices, other.indices + int(self._starts[-1])]))

    def __repr__(self) -> str:
        return f"RecordList({len(self)} records in {[s.path for s in self.stores]})"


def records_from(records: Any) -> Optional[RecordList]:
    """A RecordList for a RecordStore or RecordList; None for a plain list."""
    if isinstance(records, RecordList):
        return records
    if isinstance(records, RecordStore):
        return RecordList([records])
    return None
