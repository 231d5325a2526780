"""Argument validation shared by every constructor: messages name the argument and the bad value."""

from __future__ import annotations

import math
from typing import Literal, Optional, overload

__all__ = ["check_bool", "check_choice", "check_float", "check_int"]


def _bound(low: object, high: object, both: str) -> str:
    """How a range message states the bounds: ``both`` when both are set, else the one that is."""
    if low is not None and high is not None:
        return both
    return f">= {low}" if low is not None else f"<= {high}"


@overload
def check_int(
    name: str, value: object, low: Optional[int] = ..., high: Optional[int] = ..., *, allow_none: Literal[False] = ...
) -> int: ...
@overload
def check_int(
    name: str, value: object, low: Optional[int] = ..., high: Optional[int] = ..., *, allow_none: bool
) -> Optional[int]: ...
def check_int(
    name: str, value: object, low: Optional[int] = None, high: Optional[int] = None, *, allow_none: bool = False
) -> Optional[int]:
    """Return ``value`` if it is an int in ``[low, high]`` (either bound optional; ``None`` allowed
    with ``allow_none``).

    Raises:
        TypeError: ``value`` is not an int (a bool is not an int here).
        ValueError: ``value`` is out of range.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        kind = "an int or None" if allow_none else "an int"
        raise TypeError(f"Expected argument `{name}` to be {kind}, but got {value!r} of type {type(value).__name__}.")
    if (low is not None and value < low) or (high is not None and value > high):
        bound = _bound(low, high, f"in [{low}, {high}]")
        raise ValueError(f"Expected argument `{name}` to be an int {bound}, but got {value}.")
    return value


def check_float(name: str, value: object, low: Optional[float] = None, high: Optional[float] = None) -> float:
    """Return ``float(value)`` if it is a finite real number in ``[low, high]`` (bounds optional).

    Raises:
        TypeError: ``value`` is not a real number.
        ValueError: ``value`` is not finite or out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"Expected argument `{name}` to be a float, but got {value!r} of type {type(value).__name__}.")
    value = float(value)
    if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
        bound = _bound(low, high, f"in the [{low}, {high}] range")
        raise ValueError(f"Expected argument `{name}` to be a finite float {bound}, but got {value}.")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool.

    Raises:
        TypeError: ``value`` is not a bool.

    Examples:
        >>> check_bool("abs", True)
        True
    """
    if not isinstance(value, bool):
        raise TypeError(f"Expected argument `{name}` to be a bool, but got {value!r} of type {type(value).__name__}.")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...] | list[str]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        ValueError: ``value`` is not one of ``choices`` (the message lists them and the closest).

    Examples:
        >>> check_choice("kind", "vargrad", ("smoothgrad", "vargrad"))
        'vargrad'
    """
    if isinstance(value, str) and value in choices:
        return value
    import difflib

    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Expected argument `{name}` to be one of {list(choices)}, but got {value!r}.{hint}")
