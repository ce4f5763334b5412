"""The one base class of the problems a user can fix in what they gave detgn.

A config value, a dataset, an image or a weights file that detgn cannot use raises a subclass of
`UserInputError` (each also derives from the builtin a caller would expect: ValueError,
KeyError, FileNotFoundError...). Command-line tools print such an error on one line and exit
with status 2; any other exception is a bug or an environment failure and keeps its traceback.
"""

__all__ = ["UserInputError", "ConfigValueError"]


class UserInputError(Exception):
    """A problem in the user's config, data or weights; the message names the thing and the fix."""


class ConfigValueError(UserInputError, ValueError):
    """A config key holds a value detgn cannot use (the message names the key and the accepted values)."""
