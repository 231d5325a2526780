"""Tiny data for the tests: the shapes data module, concept sets, labelled image datasets and loaders."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_xai.data import ShapesDataModule, concept_sets


def tiny_datamodule(**kwargs: Any) -> ShapesDataModule:
    """Shapes of 16 px, 3 classes, 64 training and 32 validation images in batches of 16 (overridable)."""
    defaults = dict(batch_size=16, num_train=64, num_val=32, image_size=16, num_classes=3, seed=0)
    defaults.update(kwargs)
    return ShapesDataModule(**defaults)


def tiny_concepts(n: int = 8, names: tuple[str, ...] = ("circle", "marker_square")) -> dict[str, Any]:
    """``n`` examples of each named concept (and the random pool) at the size of ``tiny_datamodule``."""
    return concept_sets(n, image_size=16, num_classes=3, concepts=list(names))


class LabelledImages(Dataset):
    """A map-style dataset with a ``labels`` attribute (to test the class-coverage check)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


def tiny_image_loader(n: int = 32, batch_size: int = 8, seed: int = 0, num_classes: int = 3) -> DataLoader:
    """Random 1x4x4 images, labels cycling through the classes (for ``models.TinyTeacher``)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    y = torch.arange(n) % num_classes
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def tiny_rgb_loader(n: int = 32, batch_size: int = 8, seed: int = 0, num_classes: int = 3, size: int = 8) -> DataLoader:
    """Dim random RGB images whose classes 0 and 1 brighten channel 0 and 1: learnable in a few steps."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.rand(n, 3, size, size, generator=gen) * 0.2
    x[:, 0] += (y == 0).float()[:, None, None] * 0.5  # a learnable signal per class
    x[:, 1] += (y == 1).float()[:, None, None] * 0.5
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)
