"""DatasetCatalog (name -> function returning dataset dicts) and MetadataCatalog (name -> Metadata)."""

from collections import UserDict
from typing import Any, Callable, Dict, List

from detgn.utils.errors import UserInputError

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata", "UnknownDatasetError"]


class UnknownDatasetError(UserInputError, KeyError):
    """A dataset name that is not registered; the message lists the registered names."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class _DatasetCatalog(UserDict):
    """Maps a dataset name to a zero-argument function that returns its list of dicts."""

    def register(self, name: str, func: Callable[[], List[Dict]]) -> None:
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable")
        if name in self:
            raise KeyError(f"Dataset '{name}' is already registered")
        self[name] = func

    def get(self, name: str) -> List[Dict]:
        try:
            f = self[name]
        except KeyError as e:
            avail = ", ".join(sorted(self.keys()))
            raise UnknownDatasetError(f"Dataset '{name}' is not registered; available: {avail}") from e
        return f()

    def list(self) -> List[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


DatasetCatalog = _DatasetCatalog()


class Metadata:
    """Attributes of a dataset: thing_classes, thing_dataset_id_to_contiguous_id, evaluator_type,
    json_file, image_root, thing_colors ... Attributes are write-once (re-setting to a
    different value is an error, which catches two datasets sharing a name)."""

    def __init__(self, name: str = "", **kwargs):
        self.__dict__["name"] = name
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.__dict__.get('name')}'; "
            f"available: {list(self.__dict__.keys())}"
        )

    def __setattr__(self, key: str, val: Any) -> None:
        if key in self.__dict__ and self.__dict__[key] != val:
            raise AssertionError(
                f"Attribute '{key}' of dataset '{self.name}' cannot be set to a different value "
                f"({self.__dict__[key]!r} -> {val!r})"
            )
        self.__dict__[key] = val

    def set(self, **kwargs) -> "Metadata":
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default=None):
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


class _MetadataCatalog(UserDict):
    """Maps a dataset name to its Metadata (created empty on first access)."""

    def get(self, name: str) -> Metadata:
        if name not in self:
            self[name] = Metadata(name=name)
        return self[name]

    def list(self) -> List[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        self.pop(name)


MetadataCatalog = _MetadataCatalog()
