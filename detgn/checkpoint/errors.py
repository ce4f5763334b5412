"""The errors of reading weights files (one line each, naming the file)."""

from detgn.utils.errors import UserInputError

__all__ = ["WeightsFormatError", "UnsafePickleError"]


class WeightsFormatError(UserInputError, ValueError):
    """A weights file that is neither a torch checkpoint nor a (numpy) pickle, or holds no state dict."""


class UnsafePickleError(UserInputError, ValueError):
    """A weights pickle asks for a Python global outside the numpy/container allow-list."""
