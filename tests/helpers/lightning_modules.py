"""LightningModules the callback and CLI tests train: the demo CNN at its smallest, a flat MLP, a
model returning a tuple, any non-demo module, a prototype model, and a model whose weights move
without learning. Importable by module path: ddp_spawn pickles them by reference."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.demo import ShapesClassifier
from lightning_xai.modules import PrototypeHead, prototype_parameter_groups, swap_head


def tiny_model(num_classes: int = 3) -> ShapesClassifier:
    """The demo classifier at width 4 (for ``tests.helpers.data.tiny_datamodule``)."""
    return ShapesClassifier(num_classes=num_classes, width=4, dropout=0.25)


class FlatMLP(pl.LightningModule):
    """An MLP on flat vectors (what a newcomer trains on 784-feature Fashion-MNIST rows)."""

    def __init__(self, features: int = 48, num_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TupleOutputClassifier(ShapesClassifier):
    """Returns ``(logits, features)`` from forward, as many Lightning models do."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        features = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc(self.dropout(features)), features

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        logits, _ = self(batch[0])
        loss = F.cross_entropy(logits, batch[1])
        self.log(f"{stage}/loss", loss)
        return loss


class PlainCNN(pl.LightningModule):
    """Any LightningModule (not a ShapesClassifier subclass), for the CLI."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


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


class DriftingClassifier(ShapesClassifier):
    """Learns nothing from data; its weights move by a seeded, data-independent step per epoch.

    Its loss is a zero that touches no batch, so Adam leaves it, its BatchNorm statistics and its
    dropout untouched, while the start of every epoch adds seeded noise: the weights a monitor sees
    at an epoch are the same whatever the number of processes, and differ from epoch to epoch.
    """

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return sum((p * 0.0).sum() for p in self.parameters())  # zero gradients, no forward

    def on_train_epoch_start(self) -> None:
        gen = torch.Generator().manual_seed(100 + self.current_epoch)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.5 * p.std().nan_to_num(0.0) * torch.randn(p.shape, generator=gen))
