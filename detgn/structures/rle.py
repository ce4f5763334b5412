"""COCO run-length encodings checked in Python before pycocotools decodes them.

pycocotools decodes a compressed RLE string without checking it: counts that stop short of
height x width leave the rest of the mask as uninitialised memory (a different mask on every call),
and a string that ends inside a number is read past its end. `rle_problem` parses the string the way
COCO's maskApi.c does (5 bits per character from '0', 0x20 = more characters follow, 0x10 = sign,
counts after the second stored as differences) and says what is wrong, or None.
"""

from typing import List, Optional, Sequence

import numpy as np

__all__ = ["rle_string_to_counts", "rle_problem", "rle_strings_ok"]

_MAX_DIGITS = 12  # 60 bits: a longer run length cannot be an image's


def rle_string_to_counts(s) -> List[int]:
    """Uncompressed run lengths of a compressed COCO RLE string; ValueError for a malformed one."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: List[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                raise ValueError("the string ends inside a run length")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} is not an RLE digit")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_problem(seg, height: int, width: int) -> Optional[str]:
    """None if `seg` ({"size": [h, w], "counts": str | bytes | list of int}) is an RLE of exactly
    height x width pixels; else what is wrong, in a few words."""
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        return "an RLE needs 'counts' and 'size'"
    size = seg["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
    ):
        return f"RLE size {size!r} is not [height, width]"
    if [size[0], size[1]] != [int(height), int(width)]:
        return f"RLE size {list(size)} differs from the image's {[int(height), int(width)]}"
    counts = seg["counts"]
    if isinstance(counts, (str, bytes)):
        try:
            counts = rle_string_to_counts(counts)
        except (ValueError, UnicodeDecodeError) as e:
            return f"malformed RLE counts ({e})"
    elif not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        return "RLE counts must be a string or a list of integers"
    if any(c < 0 for c in counts):
        return "RLE counts has a negative run length"
    if sum(counts) != height * width:
        return f"RLE counts cover {sum(counts)} pixels, not height x width = {height * width}"
    return None


def rle_strings_ok(strings: Sequence, pixels: Sequence[int], chunk: int = 8192) -> np.ndarray:
    """(N,) bool: compressed RLE string i (str or bytes) is well formed, has no negative run and covers exactly
    pixels[i] pixels; what rle_problem(...) is None says, for many strings at once (numpy over the characters of
    `chunk` strings at a time, which bounds the temporary arrays: a val2017-size results file of 500,000 masks in
    about a second instead of 15). A False entry is then explained by rle_problem."""
    n = len(strings)
    if n > chunk:
        return np.concatenate(
            [_rle_strings_ok(strings[i : i + chunk], pixels[i : i + chunk]) for i in range(0, n, chunk)]
        )
    return _rle_strings_ok(strings, pixels)


def _rle_strings_ok(strings: Sequence, pixels: Sequence[int]) -> np.ndarray:
    n = len(strings)
    ok = np.ones(n, bool)
    if n == 0:
        return ok
    raw = [x.encode("latin-1") if isinstance(x, str) else bytes(x) for x in strings]
    lengths = np.fromiter((len(b) for b in raw), np.int64, n)
    buf = np.frombuffer(b"".join(raw), np.uint8).astype(np.int64) - 48
    owner = np.repeat(np.arange(n), lengths)
    bad_char = (buf < 0) | (buf >= 64)
    ok[np.unique(owner[bad_char])] = False
    buf = np.where(bad_char, 0, buf)
    ends = (buf & 0x20) == 0  # the last character of a run length
    last = np.cumsum(lengths) - 1
    nonempty = lengths > 0
    ok[nonempty & ~ends[np.where(nonempty, last, 0)]] = False  # a string ending inside a run length
    ends[last[nonempty]] = True  # (which then ends there, not in the next string)
    # run lengths: index of each character's run length, position of the character within it
    run = np.concatenate([[0], np.cumsum(ends)[:-1]]) if len(buf) else np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], ends[:-1]])) if len(buf) else np.zeros(0, np.int64)
    digit = np.arange(len(buf)) - starts[run]
    too_long = digit >= _MAX_DIGITS
    ok[np.unique(owner[too_long])] = False
    digit = np.minimum(digit, _MAX_DIGITS - 1)
    values = np.add.reduceat((buf & 0x1F) << (5 * digit), starts) if len(buf) else np.zeros(0, np.int64)
    end_pos = np.flatnonzero(ends)
    negative = (buf[end_pos] & 0x10) != 0
    values = values[: len(end_pos)] - np.where(negative, np.left_shift(1, 5 * (digit[end_pos] + 1)), 0)
    run_owner = owner[end_pos]
    # index of each run length in its string; runs after the second are differences to the run two before
    first_run = np.searchsorted(run_owner, np.arange(n))
    m = np.arange(len(values)) - first_run[run_owner]
    group = run_owner * 3 + np.where(m == 0, 0, np.where(m % 2 == 1, 1, 2))  # run 0 | odd runs | even runs >= 2
    order = np.lexsort((m, group))
    total = np.cumsum(values[order])
    g = group[order]
    group_start = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]])) if len(g) else np.zeros(0, np.int64)
    offsets = np.repeat(total[group_start] - values[order][group_start], np.diff(np.append(group_start, len(g))))
    counts = np.empty_like(values)
    counts[order] = total - offsets
    has_runs = np.bincount(run_owner, minlength=n) > 0
    sums = np.bincount(run_owner, weights=counts.astype(np.float64), minlength=n)
    mins = np.full(n, 0, np.int64)
    if len(counts):
        np.minimum.at(mins, run_owner, counts)
    ok &= mins >= 0
    ok &= np.where(has_runs, sums, 0) == np.asarray(pixels, np.float64)
    return ok
