"""The one base class of the problems a user can fix in what they gave detgn.

A config value, a dataset, an image or a weights file that detgn cannot use raises a subclass of
`UserInputError` (each also derives from the builtin a caller would expect: ValueError,
KeyError, FileNotFoundError...). Command-line tools print such an error on one line and exit
with status 2; any other exception is a bug or an environment failure and keeps its traceback.
"""

import reprlib

__all__ = ["UserInputError", "ConfigValueError", "short_repr"]

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxstring = _repr.maxother = 60


def short_repr(value, limit: int = 160) -> str:
    """repr(value) cut to a few items per level, three levels and `limit` characters: an error message never prints
    a user's value whole (a YAML alias bomb's repr alone would not fit in memory)."""
    text = _repr.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class UserInputError(Exception):
    """A problem in the user's config, data or weights; the message names the thing and the fix."""


class ConfigValueError(UserInputError, ValueError):
    """A config key holds a value detgn cannot use (the message names the key and the accepted values)."""
