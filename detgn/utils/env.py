"""Switches read from environment variables, spelled as people spell them, and refused when unreadable."""

import os

from .errors import UserInputError

__all__ = ["env_flag", "EnvVarError"]

_TRUE = ("1", "true", "yes", "on", "y", "t")
_FALSE = ("0", "false", "no", "off", "n", "f")


class EnvVarError(UserInputError, ValueError):
    """An environment variable detgn reads holds a value it cannot read."""


def env_flag(name: str, default: bool) -> bool:
    """The boolean in $`name`: 1/true/yes/on (or 0/false/no/off), any case, spaces ignored; unset or empty gives
    `default`; anything else is refused in one line naming the variable and the spellings accepted."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    shown = raw if len(raw) <= 40 else raw[:40] + "..."
    raise EnvVarError(f"{name}={shown!r} is not a yes/no value: use 1/0, true/false, yes/no or on/off (any case)")
