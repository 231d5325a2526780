"""Interpretable modules a user swaps into a network: plain ``nn.Module``s, no Lightning import.

:func:`swap_head` puts a head on any torchvision-style backbone (also inside a LightningModule);
:class:`PrototypeHead` is ProtoPNet's prototype layer ("this looks like that"), whose extra losses
come as a dict of named terms from :meth:`PrototypeHead.loss_terms`.
"""

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

__all__ = [
    "DEFAULT_COEFFICIENTS",
    "DEFAULT_LEARNING_RATES",
    "STAGES",
    "NearestPatches",
    "PrototypeHead",
    "PrototypeOutput",
    "find_head",
    "find_prototype_head",
    "patch_boxes",
    "prototype_parameter_groups",
    "set_stage",
    "swap_head",
]
