"""Deprecated spelling: this module is :mod:`lightning_xai.metrics.functional.localization` (names and
modules use the American spelling, as torch and torchmetrics do). Its names resolve here, with a
``DeprecationWarning``, for one release."""

from __future__ import annotations

from lightning_xai._deprecation import forward_names

__getattr__ = forward_names(__name__, "lightning_xai.metrics.functional.localization")
