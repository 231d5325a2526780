"""Explanation-quality scores as torchmetrics ``Metric`` classes (accumulate over batches, sync
over DDP ranks) over the pure functions in :mod:`lightning_xai.metrics.functional`.

Metrics that perturb inputs take the model in ``update``; those that call an explainer hold it
as configuration (explainers hold no model, so a metric stays picklable). Per-sample values that
are NaN (an empty mask, a constant score) are counted in ``skipped`` and left out of the mean.
Metrics with a ``seed`` draw batch ``i`` (counted since construction or ``reset``) with the seed
``seed + i``, under ``forward`` and ``update`` alike: batches get distinct draws, reruns the same.

``metrics/`` mirrors ``metrics/functional/`` file for file (``faithfulness``, ``localization``,
``randomization``, ``reliability``, ``removal``, ``robustness``, ``similarity``, ``maps``), as
torchmetrics does. Every class carries a ``name`` (its function's name);
:data:`METRIC_CLASSES` is the one registry, and :data:`~lightning_xai.metrics.evaluate.METRICS`
(per-sample scores by name) is derived from it.
"""

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
from lightning_xai.metrics.registry import METRIC_CLASSES, metric_class
from lightning_xai.metrics.reliability import InternalConsistency, MetricReliability
from lightning_xai.metrics.removal import ROAD, ROAR
from lightning_xai.metrics.robustness import Fragility, LocalLipschitz, MaxSensitivity
from lightning_xai.metrics.similarity import MapSimilarity

__all__ = [
    "DataRandomization",
    "DeletionAUC",
    "ExplanationMetric",
    "FaithfulnessCorrelation",
    "Fragility",
    "Infidelity",
    "InputInvariance",
    "InsertionAUC",
    "InternalConsistency",
    "LocalLipschitz",
    "METRIC_CLASSES",
    "MapEntropy",
    "MapSSIM",
    "MapSimilarity",
    "MaskAUPR",
    "MaskMass",
    "MaskShare",
    "MaxSensitivity",
    "MetricReliability",
    "ParameterRandomization",
    "PixelFlipping",
    "PointingGame",
    "ROAD",
    "ROAR",
    "RegionPerturbation",
    "metric_class",
]
