"""Interpretable modules a user swaps into a network: plain ``nn.Module``s, no Lightning import.

:func:`swap_head` puts a head on any torchvision-style backbone (also inside a LightningModule);
:class:`PrototypeHead` is ProtoPNet's prototype layer ("this looks like that"), whose extra losses
come as a dict of named terms from :meth:`PrototypeHead.loss_terms`.
"""

from lightning_xai.modules.prototype import (
    DEFAULT_COEFFICIENTS,
    NearestPatches,
    PrototypeHead,
    PrototypeOutput,
    patch_boxes,
)
from lightning_xai.modules.swap import find_head, swap_head

__all__ = [
    "DEFAULT_COEFFICIENTS",
    "NearestPatches",
    "PrototypeHead",
    "PrototypeOutput",
    "find_head",
    "patch_boxes",
    "swap_head",
]
