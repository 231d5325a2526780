"""Deprecated spelling: this module is :mod:`lightning_xai.metrics.functional.randomization` (names and
modules use the American spelling, as torch and torchmetrics do). Its names resolve here, with a
``DeprecationWarning``, for one release."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    target = importlib.import_module("lightning_xai.metrics.functional.randomization")
    if not hasattr(target, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"`lightning_xai.metrics.functional.randomisation.{name}` is now "
        f"`lightning_xai.metrics.functional.randomization.{name}`; the old path goes away in the next release.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(target, name)
