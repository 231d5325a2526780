"""Deprecated: the Metric classes moved to one module per family (``faithfulness``,
``localization``, ``randomization``, ``reliability``, ``removal``, ``robustness``, ``similarity``),
mirroring :mod:`lightning_xai.metrics.functional`. Import them from :mod:`lightning_xai.metrics`;
this module re-exports them (without a warning) for one release.
"""

from lightning_xai._deprecation import forward_names
from lightning_xai.metrics.registry import METRIC_CLASSES

# every registered class but the ``maps`` family, which came after this module was split
__all__ = sorted(cls.__name__ for cls in METRIC_CLASSES.values() if cls.__module__ != "lightning_xai.metrics.maps")
__getattr__ = forward_names(__name__, "lightning_xai.metrics", names=__all__, warn=False)
