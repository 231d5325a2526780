"""Old module paths kept for one release: a module ``__getattr__`` that forwards to the new home."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["forward_names"]


def forward_names(
    old: str,
    new: str,
    *,
    also: str | None = None,
    names: Collection[str] | None = None,
    warn: bool = True,
) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``old`` that resolves names from the module ``new``.

    ``new`` is imported on first access only, so a shim costs nothing until it is used (and
    drawing code can keep a shim for the logging layer without importing it).

    Args:
        old: The deprecated module's dotted name (its ``__name__``).
        new: Dotted name of the module the names now live in.
        also: Another public path named in the warning (e.g. the sub-package re-exporting them).
        names: The only names forwarded; ``None`` forwards every public attribute of ``new``.
        warn: Emit a ``DeprecationWarning`` naming both paths on each access.

    Returns:
        The function to assign to the old module's ``__getattr__``. It raises ``AttributeError``
        for dunder names and for names ``new`` does not have (or ``names`` does not list).

    Examples:
        >>> get = forward_names("pkg.old", "math", warn=False)
        >>> get("pi") > 3
        True
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if names is not None and name not in names:  # decided before `new` is imported
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = importlib.import_module(new)
        if not hasattr(target, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        if warn:
            where = f" (also `{also}`)" if also else ""
            warnings.warn(
                f"`{old}.{name}` moved to `{new}.{name}`{where}; the old path goes away in the next release.",
                DeprecationWarning,
                stacklevel=2,
            )
        return getattr(target, name)

    return __getattr__
