"""Importable helpers for the prototype callback tests (ddp_spawn pickles what it runs)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.demo import ShapesClassifier
from lightning_xai.modules import PrototypeHead, prototype_parameter_groups, swap_head


class ProtoShapes(ShapesClassifier):
    """The demo CNN with its pool + dropout + fc swapped for a PrototypeHead, trained on its loss terms."""

    def __init__(self, num_classes: int = 3, width: int = 4, per_class: int = 2, dim: int = 4) -> None:
        super().__init__(num_classes=num_classes, width=width, dropout=0.25)
        swap_head(self, PrototypeHead(2 * width, num_classes, prototypes_per_class=per_class, prototype_dim=dim))

    @property
    def head(self) -> PrototypeHead:
        return self.pool  # swap_head put the head where the global pool was

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        terms = self.head.loss_terms(logits, y)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean())
        return terms["loss"] if stage == "train" else F.cross_entropy(logits, y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(prototype_parameter_groups(self, {"backbone": 1e-3, "last_layer": 1e-3}))
