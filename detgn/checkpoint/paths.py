"""Weight paths: local files, http(s) URLs (downloaded once, cached by iopath), and aliases.

    catalog://ImageNetPretrained/FAIR/R-50-GN  -> Detectron's GN ImageNet ResNet-50 (.pkl)
    catalog://ImageNetPretrained/MSRA/R-50     -> MSRA's BN ResNet-50 (.pkl)
    detectron2://<path>                        -> https://dl.fbaipublicfiles.com/detectron2/<path>
"""
import os

__all__ = ["resolve_weights_path", "alias_to_url", "WeightsNotFoundError", "cache_dir"]

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


class WeightsNotFoundError(FileNotFoundError):
    """MODEL.WEIGHTS could not be found or downloaded; the message says what to fetch and where to put it."""


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("FVCORE_CACHE", os.path.join("~", ".torch", "iopath_cache")))


def alias_to_url(path: str) -> str:
    """Translate catalog:// and detectron2:// aliases to download URLs; other paths are returned unchanged."""
    if path.startswith("catalog://"):
        name = path[len("catalog://"):]
        if name.startswith("ImageNetPretrained/"):
            key = name[len("ImageNetPretrained/"):]
            if key not in _C2_IMAGENET:
                raise WeightsNotFoundError(f"Unknown catalog entry '{path}'; known: "
                                           + ", ".join("catalog://ImageNetPretrained/" + k for k in sorted(_C2_IMAGENET)))
            return f"{_DETECTRON}/{_C2_IMAGENET[key]}"
        raise WeightsNotFoundError(f"Unknown catalog entry '{path}' (only catalog://ImageNetPretrained/... is supported)")
    if path.startswith("detectron2://"):
        return f"{_DETECTRON2}/{path[len('detectron2://'):]}"
    return path


def _cached_location(url: str) -> str:
    """Where iopath's HTTPURLHandler caches `url`."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return os.path.join(cache_dir(), os.path.dirname(parsed.path.lstrip("/")), os.path.basename(parsed.path))


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
        from iopath.common.file_io import HTTPURLHandler, PathManager

        pm = PathManager()
        pm.register_handler(HTTPURLHandler())
        try:
            got = pm.get_local_path(url, cache_dir=cache_dir())
        except Exception as e:
            raise WeightsNotFoundError(
                f"Cannot download {url} ({type(e).__name__}: {e}). Fetch it on a connected machine and put it at {local}, "
                f"or set MODEL.WEIGHTS to a local file") from e
        if not os.path.isfile(got):
            raise WeightsNotFoundError(f"Download of {url} gave no file; put the file at {local}")
        return got
    raise WeightsNotFoundError(f"Weights file not found: {path} (set MODEL.WEIGHTS to an existing file, a URL, or a catalog:// alias)")
