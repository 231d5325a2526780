"""Deprecated home of the sinks: they moved to :mod:`lightning_xai.sinks` (``lightning_xai.sinks.loggers``).

Every name still resolves here, with a ``DeprecationWarning``, for one release. The forwarding is
lazy (on first access) so that drawing (``render``) does not import the logging layer.
"""

from __future__ import annotations

from lightning_xai._deprecation import forward_names

__getattr__ = forward_names(__name__, "lightning_xai.sinks.loggers", also="lightning_xai.sinks")
