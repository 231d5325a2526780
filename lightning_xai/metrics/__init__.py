"""Scores over explanations as torchmetrics ``Metric`` classes; pure functions in ``functional``."""

from lightning_xai.metrics.maps import MapEntropy, MapSSIM, MaskShare

__all__ = ["MapEntropy", "MapSSIM", "MaskShare"]
