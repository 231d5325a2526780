"""The demo: a small CNN classifier for :class:`~lightning_xai.data.ShapesDataset`, and the TCAV
monitor of the shortcut demo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Optional, Union

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:
    from lightning_xai.callbacks.tcav import TCAVMonitor

__all__ = ["ShapesClassifier", "ShapesClassifierMixin", "tcav_demo_monitor"]


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


def tcav_demo_monitor(
    image_size: int = 48,
    num_classes: int = 4,
    shortcut_class: int = 0,
    layers: Union[str, Sequence[str]] = "features.6",
    num_per_concept: int = 50,
    n_random: int = 10,
    every_n_epochs: int = 1,
    every_n_train_steps: Optional[int] = None,
    seed: int = 0,
    max_overhead: Optional[float] = None,
) -> TCAVMonitor:
    """The ``TCAVMonitor`` for the shortcut demo (:class:`~lightning_xai.demo.ShapesClassifier` on
    ``ShapesDataModule(shortcut=True)``): is the class learned from its corner marker or its shape?

    Two concepts for ``shortcut_class``: its marker (``"marker_<shape>"``: the marker on random
    shapes) and its shape (``"<shape>"``), against random shapes without a marker, and the
    relative CAV ``"marker_<shape>-vs-<shape>"`` (marker against shape directly), with the
    default ``"effect"`` statistic (measured values: the docs' results page).

    Examples:
        >>> monitor = tcav_demo_monitor(image_size=16, num_classes=3, num_per_concept=8, n_random=3)
        >>> monitor.concept_names, monitor.target_classes
        (['marker_square', 'square', 'marker_square-vs-square'], [0])
    """
    from lightning_xai._validation import check_int
    from lightning_xai.callbacks.tcav import TCAVMonitor
    from lightning_xai.data import SHAPE_NAMES, concept_sets, random_images

    shape = SHAPE_NAMES[check_int("shortcut_class", shortcut_class, 0, num_classes - 1)]
    sets = concept_sets(
        num_per_concept,
        image_size=image_size,
        num_classes=num_classes,
        concepts=[f"marker_{shape}", shape],
        seed=seed + 100,
    )
    pool = random_images(num_per_concept * n_random, image_size=image_size, num_classes=num_classes, seed=seed + 7)
    return TCAVMonitor(
        concepts={name: s.images for name, s in sets.items()},
        layers=layers,
        target_classes=[shortcut_class],
        relative=[(f"marker_{shape}", shape)],
        n_random=n_random,
        random_examples=pool,
        random_size=num_per_concept,
        every_n_epochs=every_n_epochs,
        every_n_train_steps=every_n_train_steps,
        seed=seed,
        max_overhead=max_overhead,
    )
