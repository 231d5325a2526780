"""Propagation-rule explainers: LRP with composites and canonizers, Deep Taylor, DeepLift,
PatternNet and PatternAttribution.

No Lightning import here.
"""

from lightning_xai.attribution.propagation.cache import cache_size, clear_cache, weight_cache
from lightning_xai.attribution.propagation.canonizers import batchnorm_pairs, merged_parameters
from lightning_xai.attribution.propagation.composites import COMPOSITES, Composite, make_composite
from lightning_xai.attribution.propagation.deeplift import DeepLift
from lightning_xai.attribution.propagation.lrp import LRP, DeepTaylor
from lightning_xai.attribution.propagation.patterns import (
    PatternAttribution,
    PatternNet,
    PatternStatistics,
    estimate_patterns,
    get_patterns,
    set_patterns,
)
from lightning_xai.attribution.propagation.rules import (
    RULES,
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Pass,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
)

__all__ = [
    "COMPOSITES",
    "RULES",
    "AlphaBeta",
    "Composite",
    "DeepLift",
    "DeepTaylor",
    "Epsilon",
    "Flat",
    "Gamma",
    "LRP",
    "Norm",
    "Pass",
    "PatternAttribution",
    "PatternNet",
    "PatternStatistics",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "batchnorm_pairs",
    "cache_size",
    "clear_cache",
    "estimate_patterns",
    "get_patterns",
    "make_composite",
    "merged_parameters",
    "set_patterns",
    "weight_cache",
]
