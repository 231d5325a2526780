"""A user's own LightningModule and data module for the CLI tests: their defaults and argument names
overlap the demo's (``num_classes``, ``lr``, ``batch_size``) with different values, so a CLI that
leaks the demo's defaults into them is caught."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


class UserCNN(pl.LightningModule):
    """A 2-class CNN whose defaults differ from the demo's ShapesClassifier (4 classes, lr 3e-3)."""

    def __init__(self, num_classes: int = 2, lr: float = 0.125, hidden: int = 5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class UserData(pl.LightningDataModule):
    """Random 12x12 images with ``num_classes`` labels; defaults differ from ShapesDataModule's (batch 32)."""

    def __init__(self, batch_size: int = 6, num_classes: int = 2, size: int = 24) -> None:
        super().__init__()
        self.batch_size, self.num_classes, self.size = batch_size, num_classes, size
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(size, 3, 12, 12, generator=g)
        self.labels = torch.randint(0, num_classes, (size,), generator=g)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=self.batch_size)
