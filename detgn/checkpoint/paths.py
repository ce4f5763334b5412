"""Weight paths: local files, http(s) URLs (downloaded once, cached by iopath), and aliases.

catalog://ImageNetPretrained/FAIR/R-50-GN  -> Detectron's GN ImageNet ResNet-50 (.pkl)
catalog://ImageNetPretrained/MSRA/R-50     -> MSRA's BN ResNet-50 (.pkl)
detectron2://<path>                        -> https://dl.fbaipublicfiles.com/detectron2/<path>
"""

import os

from detgn.utils.atomic import atomic_write
from detgn.utils.errors import UserInputError

__all__ = ["resolve_weights_path", "alias_to_url", "download", "WeightsNotFoundError", "cache_dir"]

_DETECTRON = "https://dl.fbaipublicfiles.com/detectron"
_DETECTRON2 = "https://dl.fbaipublicfiles.com/detectron2"
_C2_IMAGENET = {
    "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
    "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
    "FAIR/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
    "FAIR/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
    "FAIR/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
    "FAIR/X-101-64x4d": "ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl",
    "FAIR/X-152-32x8d-IN5k": "ImageNetPretrained/25093814/X-152-32x8d-IN5k.pkl",
}


class WeightsNotFoundError(UserInputError, FileNotFoundError):
    """MODEL.WEIGHTS could not be found or downloaded; the message says what to fetch and where to put it."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("FVCORE_CACHE", os.path.join("~", ".torch", "iopath_cache")))


def alias_to_url(path: str) -> str:
    """Translate catalog:// and detectron2:// aliases to download URLs; other paths are returned unchanged."""
    if path.startswith("catalog://"):
        name = path[len("catalog://") :]
        if name.startswith("ImageNetPretrained/"):
            key = name[len("ImageNetPretrained/") :]
            if key not in _C2_IMAGENET:
                raise WeightsNotFoundError(
                    f"Unknown catalog entry '{path}'; known: "
                    + ", ".join("catalog://ImageNetPretrained/" + k for k in sorted(_C2_IMAGENET))
                )
            return f"{_DETECTRON}/{_C2_IMAGENET[key]}"
        raise WeightsNotFoundError(
            f"Unknown catalog entry '{path}' (only catalog://ImageNetPretrained/... is supported)"
        )
    if path.startswith("detectron2://"):
        return f"{_DETECTRON2}/{path[len('detectron2://') :]}"
    return path


def _cached_location(url: str) -> str:
    """Where iopath's HTTPURLHandler caches `url`."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return os.path.join(cache_dir(), os.path.dirname(parsed.path.lstrip("/")), os.path.basename(parsed.path))


def download(url: str, dest: str, timeout_s: float = 60.0, chunk: int = 1 << 20) -> str:
    """Download `url` to `dest` atomically: the bytes go to a temporary file beside `dest`, which
    is renamed only when the transfer is complete (as many bytes as Content-Length says, when the
    server sends it). An interrupted or short download leaves no file at `dest`, so it is never
    taken for a cached copy. The file is not trusted for that: it is still read by load_any_file.
    """
    import urllib.request

    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with atomic_write(dest, "wb") as f, urllib.request.urlopen(url, timeout=timeout_s) as r:
        expected = r.headers.get("Content-Length")
        got = 0
        while True:
            block = r.read(chunk)
            if not block:
                break
            f.write(block)
            got += len(block)
        if expected is not None and got != int(expected):
            raise OSError(f"incomplete download: {got} of {expected} bytes")
        if got == 0:
            raise OSError("the server sent an empty file")
    return dest


def resolve_weights_path(path: str) -> str:
    """A local file path for `path` (downloading URLs once into the iopath cache)."""
    path = os.path.expanduser(path)
    if os.path.isfile(path):
        return path
    url = alias_to_url(path)
    if url.startswith(("http://", "https://")):
        local = _cached_location(url)
        if os.path.isfile(local):
            return local
        try:
            download(url, local)
        except (OSError, ValueError) as e:
            raise WeightsNotFoundError(
                f"Cannot download {url} ({type(e).__name__}: {e}). Fetch it on a connected machine and put it at {local}, "
                f"or set MODEL.WEIGHTS to a local file"
            ) from None
        return local
    raise WeightsNotFoundError(
        f"Weights file not found: {path} (set MODEL.WEIGHTS to an existing file, a URL, or a catalog:// alias)"
    )
