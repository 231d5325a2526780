"""Deprecated: the Metric classes moved to one module per family (``faithfulness``,
``localization``, ``randomization``, ``reliability``, ``removal``, ``robustness``, ``similarity``),
mirroring :mod:`lightning_xai.metrics.functional`. Import them from :mod:`lightning_xai.metrics`;
this module re-exports them for one release.
"""

from lightning_xai.metrics.faithfulness import (
    DeletionAUC,
    FaithfulnessCorrelation,
    Infidelity,
    InsertionAUC,
    PixelFlipping,
    RegionPerturbation,
)
from lightning_xai.metrics.localization import MaskAUPR, MaskMass, PointingGame
from lightning_xai.metrics.randomization import DataRandomization, InputInvariance, ParameterRandomization
from lightning_xai.metrics.reliability import InternalConsistency, MetricReliability
from lightning_xai.metrics.removal import ROAD, ROAR
from lightning_xai.metrics.robustness import Fragility, LocalLipschitz, MaxSensitivity
from lightning_xai.metrics.similarity import MapSimilarity

__all__ = [
    "DataRandomization",
    "DeletionAUC",
    "FaithfulnessCorrelation",
    "Fragility",
    "Infidelity",
    "InputInvariance",
    "InsertionAUC",
    "InternalConsistency",
    "LocalLipschitz",
    "MapSimilarity",
    "MaskAUPR",
    "MaskMass",
    "MaxSensitivity",
    "MetricReliability",
    "ParameterRandomization",
    "PixelFlipping",
    "PointingGame",
    "ROAD",
    "ROAR",
    "RegionPerturbation",
]
