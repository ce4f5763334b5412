"""COCO run-length encodings checked in Python before pycocotools decodes them.

pycocotools decodes a compressed RLE string without checking it: counts that stop short of
height x width leave the rest of the mask as uninitialised memory (a different mask on every call),
and a string that ends inside a number is read past its end. `rle_problem` parses the string the way
COCO's maskApi.c does (5 bits per character from '0', 0x20 = more characters follow, 0x10 = sign,
counts after the second stored as differences) and says what is wrong, or None.
"""

from typing import List, Optional

__all__ = ["rle_string_to_counts", "rle_problem"]


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
