"""The data errors every loader raises (COCO, LVIS, ImageFolder, the record store), each a UserInputError
reported in one line that names the file."""

from detgn.utils.errors import UserInputError

__all__ = ["DatasetNotFoundError", "DatasetFormatError"]


class DatasetNotFoundError(UserInputError, FileNotFoundError):
    """The annotation file, the image folder or every image of a dataset is missing."""


class DatasetFormatError(UserInputError, ValueError):
    """The annotation file cannot be used; the message names the file and what is wrong."""
