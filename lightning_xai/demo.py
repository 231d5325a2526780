"""The demo model: a small CNN classifier for :class:`~lightning_xai.data.ShapesDataset`."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ShapesClassifier", "ShapesClassifierMixin"]


class ShapesClassifierMixin:
    """A small CNN (conv/BN/ReLU blocks, global average pool, linear head) for the shapes data.

    The global-average-pool + linear head makes every CAM method applicable; ``features.7`` is
    the last convolution.

    Args:
        num_classes: Number of classes.
        in_channels: Input channels.
        width: Channels of the first block (doubled in the later blocks).
        lr: Adam learning rate.
        dropout: Dropout before the linear head.
    """

    def __init__(
        self, num_classes: int = 4, in_channels: int = 3, width: int = 16, lr: float = 3e-3, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # type: ignore[attr-defined]
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(self.features(x)), 1)))

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}/acc", acc, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class ShapesClassifier(ShapesClassifierMixin, pl.LightningModule):
    __doc__ = ShapesClassifierMixin.__doc__
