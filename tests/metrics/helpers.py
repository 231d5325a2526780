"""Models and data the metric tests share (importable: spawned DDP workers unpickle them)."""

from __future__ import annotations

import functools

import torch
from torch import nn

from lightning_xai.data import ShapesDataset


class ShapesNet(nn.Module):
    """A small CNN for 3x16x16 shapes: conv-relu x3, max-pool, linear on the flattened features."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@functools.lru_cache(maxsize=1)
def trained_shapes_model() -> tuple[nn.Module, ShapesDataset]:
    """ShapesNet trained (seeded, a few seconds on one core) on 384 two-class shapes of 16 px; with a test set."""
    torch.manual_seed(0)
    train = ShapesDataset(num_samples=384, image_size=16, num_classes=2, noise=0.02, seed=1)
    test = ShapesDataset(num_samples=64, image_size=16, num_classes=2, noise=0.02, seed=2)
    model = ShapesNet(train.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(train.images[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), test
