"""Embedded datasets with ground truth, and probe-set selection.

:class:`ShapesDataset` generates images of one shape each with its pixel mask and an optional
label-correlated marker (a "Clever Hans" shortcut); :class:`ShapesDataModule` wraps it for
Lightning (shortcut in training only). :func:`select_probe` picks the fixed, class-balanced
:class:`Probe` a monitor explains.

Only :class:`ShapesDataModule` needs Lightning; it is imported on first access, so the rest of
this package stays Lightning-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_xai.data.concepts import CONCEPT_COLORS, ConceptSet, concept_sets, dissection_masks, random_images
from lightning_xai.data.probe import INPUT_KEYS, MASK_KEYS, TARGET_KEYS, Probe, ProbeSource, select_probe
from lightning_xai.data.shapes import MARKER_COLORS, SHAPE_NAMES, ShapesDataset

if TYPE_CHECKING:
    from lightning_xai.data.datamodule import ShapesDataModule

__all__ = [
    "INPUT_KEYS",
    "MARKER_COLORS",
    "MASK_KEYS",
    "Probe",
    "ProbeSource",
    "SHAPE_NAMES",
    "ShapesDataModule",
    "ShapesDataset",
    "TARGET_KEYS",
    "select_probe",
    "CONCEPT_COLORS",
    "ConceptSet",
    "concept_sets",
    "dissection_masks",
    "random_images",
]


def __getattr__(name: str) -> Any:
    if name == "ShapesDataModule":
        from lightning_xai.data.datamodule import ShapesDataModule

        return ShapesDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
