"""Interpretable modules: heads and masks a user trains beside or inside a network.

The plain modules (:class:`SoftDecisionTree`, :class:`ClassSpecificGates`, :class:`MaskingModel`
and its explainer :class:`MaskingModelExplainer`, registered as ``"masking_model"``) import no
Lightning; the LightningModules that train them (:class:`TreeDistillation`,
:class:`ClassSpecificGateTraining`, :class:`MaskingModelTraining`) are imported on first access of
their names here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_xai.modules.gates import ClassSpecificGates
from lightning_xai.modules.masking import MaskingModel, MaskingModelExplainer
from lightning_xai.modules.tree import MAX_TREE_DEPTH, SoftDecisionTree

if TYPE_CHECKING:
    from lightning_xai.modules.distill import TreeDistillation
    from lightning_xai.modules.gate_training import ClassSpecificGateTraining
    from lightning_xai.modules.masking_training import MaskingModelTraining

__all__ = [
    "MAX_TREE_DEPTH",
    "ClassSpecificGateTraining",
    "ClassSpecificGates",
    "MaskingModel",
    "MaskingModelExplainer",
    "MaskingModelTraining",
    "SoftDecisionTree",
    "TreeDistillation",
]

_LIGHTNING_NAMES = {
    "TreeDistillation": "lightning_xai.modules.distill",
    "ClassSpecificGateTraining": "lightning_xai.modules.gate_training",
    "MaskingModelTraining": "lightning_xai.modules.masking_training",
}


def __getattr__(name: str) -> Any:
    if name in _LIGHTNING_NAMES:
        import importlib

        return getattr(importlib.import_module(_LIGHTNING_NAMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
