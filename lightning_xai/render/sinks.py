"""Deprecated home of the sinks: they moved to :mod:`lightning_xai.sinks` (``lightning_xai.sinks.loggers``).

Every name still resolves here, with a ``DeprecationWarning``, for one release. The forwarding is
lazy (on first access) so that drawing (``render``) does not import the logging layer.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_NEW_HOME = "lightning_xai.sinks.loggers"


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    target = importlib.import_module(_NEW_HOME)
    if not hasattr(target, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"`lightning_xai.render.sinks.{name}` moved to `{_NEW_HOME}.{name}` (also `lightning_xai.sinks`); "
        "the old path goes away in the next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(target, name)
