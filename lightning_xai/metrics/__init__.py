"""Scores over explanations as torchmetrics ``Metric`` classes; pure functions in ``functional``."""

from lightning_xai.metrics.maps import MapEntropy, MapSSIM, MaskShare
from lightning_xai.metrics.quality import (
    ROAD,
    ROAR,
    DataRandomization,
    DeletionAUC,
    FaithfulnessCorrelation,
    Fragility,
    Infidelity,
    InputInvariance,
    InsertionAUC,
    InternalConsistency,
    LocalLipschitz,
    MapSimilarity,
    MaskAUPR,
    MaskMass,
    MaxSensitivity,
    MetricReliability,
    ParameterRandomization,
    PixelFlipping,
    PointingGame,
    RegionPerturbation,
)

__all__ = ["MapEntropy", "MapSSIM", "MaskShare"]
__all__ += [
    "DataRandomization",
    "DeletionAUC",
    "FaithfulnessCorrelation",
    "Fragility",
    "Infidelity",
    "InputInvariance",
    "InsertionAUC",
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
__all__ += ["InternalConsistency"]
