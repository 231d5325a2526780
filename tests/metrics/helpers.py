"""Models and data the metric tests share (importable: spawned DDP workers unpickle them)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn


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
def trained_shapes_model() -> tuple[nn.Module, Any]:
    """ShapesNet trained (seeded, a few seconds on one core) on 384 two-class shapes of 16 px; with a test set."""
    from lightning_xai.data.shapes import ShapesDataset

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


def _ddp_metrics():
    from lightning_xai.attribution import Saliency
    from lightning_xai.metrics import (
        ROAD,
        DeletionAUC,
        Fragility,
        InternalConsistency,
        MetricReliability,
        ParameterRandomization,
        PointingGame,
    )

    return {
        "deletion": (DeletionAUC(steps=6), "model"),
        "pointing": (PointingGame(), "masks"),
        "mprt": (ParameterRandomization(Saliency()), "explain"),
        "road": (ROAD(fractions=[0.25, 0.5], noise_std=0.0), "model"),
        "reliability": (MetricReliability(), "scores"),
        "consistency": (InternalConsistency(), "scores"),
        "fragility": (Fragility(Saliency(), iterations=2, epsilon=0.1), "explain"),
    }


def ddp_data():
    """A model and one batch of 8 for the DDP test."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 6, 6, generator=gen)
    maps = torch.randn(8, 1, 6, 6, generator=gen)
    masks = (torch.rand(8, 1, 6, 6, generator=gen) > 0.5).float()
    target = torch.randint(0, 3, (8,), generator=gen)
    scores = torch.rand(8, 3, generator=gen)
    return model, x, maps, masks, target, scores


def update_all(metrics, rows: slice) -> None:
    model, x, maps, masks, target, scores = ddp_data()
    for metric, kind in metrics.values():
        if kind == "model":
            metric.update(model, x[rows], maps[rows], target[rows])
        elif kind == "masks":
            metric.update(maps[rows], masks[rows])
        elif kind == "explain":
            metric.update(model, x[rows], target[rows])
        else:
            metric.update(scores[rows])


def ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    """Rank ``rank`` updates every metric with its half of the batch (in two updates), then
    computes (torchmetrics syncs the states over gloo) and rank 0 saves the results."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        metrics = _ddp_metrics()
        half = 8 // world
        update_all(metrics, slice(rank * half, rank * half + half // 2))
        update_all(metrics, slice(rank * half + half // 2, (rank + 1) * half))
        results = {name: metric.compute() for name, (metric, _) in metrics.items()}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()
