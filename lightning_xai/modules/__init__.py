"""Interpretable modules a user swaps into or trains beside a network.

The plain modules import no Lightning: :func:`swap_head` puts a head on any torchvision-style
backbone (also inside a LightningModule); :class:`PrototypeHead` is ProtoPNet's prototype layer
("this looks like that"), whose extra losses come as a dict of named terms from
:meth:`PrototypeHead.loss_terms`; :class:`SoftDecisionTree`, :class:`ClassSpecificGates` and
:class:`MaskingModel` (with its explainer :class:`MaskingModelExplainer`, registered as
``"masking_model"``). The LightningModules that train the last three
(:class:`TreeDistillation`, :class:`ClassSpecificGateTraining`, :class:`MaskingModelTraining`) are
imported on first access of their names here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_xai.modules.gates import ClassSpecificGates
from lightning_xai.modules.masking import MaskingModel, MaskingModelExplainer
from lightning_xai.modules.prototype import (
    DEFAULT_COEFFICIENTS,
    DEFAULT_LEARNING_RATES,
    STAGES,
    NearestPatches,
    PrototypeHead,
    PrototypeOutput,
    find_prototype_head,
    patch_boxes,
    prototype_parameter_groups,
    set_stage,
)
from lightning_xai.modules.swap import find_head, swap_head
from lightning_xai.modules.tree import MAX_TREE_DEPTH, SoftDecisionTree

if TYPE_CHECKING:
    from lightning_xai.modules.distill import TreeDistillation
    from lightning_xai.modules.gate_training import ClassSpecificGateTraining
    from lightning_xai.modules.masking_training import MaskingModelTraining

__all__ = [
    "DEFAULT_COEFFICIENTS",
    "DEFAULT_LEARNING_RATES",
    "MAX_TREE_DEPTH",
    "STAGES",
    "ClassSpecificGateTraining",
    "ClassSpecificGates",
    "MaskingModel",
    "MaskingModelExplainer",
    "MaskingModelTraining",
    "NearestPatches",
    "PrototypeHead",
    "PrototypeOutput",
    "SoftDecisionTree",
    "TreeDistillation",
    "find_head",
    "find_prototype_head",
    "patch_boxes",
    "prototype_parameter_groups",
    "set_stage",
    "swap_head",
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
