"""The one metric registry: every Metric class of :mod:`lightning_xai.metrics` by its ``name``.

Each class carries its name (its function's name in :mod:`lightning_xai.metrics.functional`) and,
where it has one, its per-sample function; :data:`lightning_xai.metrics.evaluate.METRICS` is
derived from this table, so a new metric is registered by adding its class here.
"""

from __future__ import annotations

from lightning_xai.metrics.base import ExplanationMetric
from lightning_xai.metrics.faithfulness import (
    DeletionAUC,
    FaithfulnessCorrelation,
    Infidelity,
    InsertionAUC,
    PixelFlipping,
    RegionPerturbation,
)
from lightning_xai.metrics.localization import MaskAUPR, MaskMass, PointingGame
from lightning_xai.metrics.maps import MapEntropy, MapSSIM, MaskShare
from lightning_xai.metrics.randomization import DataRandomization, InputInvariance, ParameterRandomization
from lightning_xai.metrics.reliability import InternalConsistency, MetricReliability
from lightning_xai.metrics.removal import ROAD, ROAR
from lightning_xai.metrics.robustness import Fragility, LocalLipschitz, MaxSensitivity
from lightning_xai.metrics.similarity import MapSimilarity

__all__ = ["METRIC_CLASSES", "metric_class"]

_CLASSES: tuple[type[ExplanationMetric], ...] = (
    DeletionAUC,
    InsertionAUC,
    PixelFlipping,
    RegionPerturbation,
    FaithfulnessCorrelation,
    Infidelity,
    LocalLipschitz,
    MaxSensitivity,
    Fragility,
    PointingGame,
    MaskAUPR,
    MaskMass,
    MapSimilarity,
    ParameterRandomization,
    DataRandomization,
    InputInvariance,
    ROAD,
    ROAR,
    MetricReliability,
    InternalConsistency,
    MapEntropy,
    MapSSIM,
    MaskShare,
)


def _by_name(classes: tuple[type[ExplanationMetric], ...]) -> dict[str, type[ExplanationMetric]]:
    table: dict[str, type[ExplanationMetric]] = {}
    for cls in classes:
        if not cls.name or cls.name in table:
            raise RuntimeError(f"Metric class {cls.__name__} needs a unique `name`, but got {cls.name!r}.")
        table[cls.name] = cls
    return table


METRIC_CLASSES: dict[str, type[ExplanationMetric]] = _by_name(_CLASSES)
"""Every Metric class by name (``"deletion_auc"`` -> :class:`~lightning_xai.metrics.DeletionAUC`)."""


def metric_class(name: str) -> type[ExplanationMetric]:
    """The Metric class called ``name``.

    Raises:
        ValueError: ``name`` is not a key of :data:`METRIC_CLASSES`.

    Examples:
        >>> metric_class("pointing_game").__name__
        'PointingGame'
    """
    if not isinstance(name, str) or name not in METRIC_CLASSES:
        raise ValueError(f"Unknown metric {name!r}. Known metrics: {', '.join(sorted(METRIC_CLASSES))}.")
    return METRIC_CLASSES[name]
