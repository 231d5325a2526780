"""Data and a spawned DDP worker for the metric tests: the map metrics' batches and their
(Metric class, pure function) pairs, and the quality metrics updated on one batch per rank.
Importable by module path: ``torch.multiprocessing`` pickles the worker by reference."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.metrics import MapEntropy, MapSSIM, MaskShare
from lightning_xai.metrics.functional import map_entropy, map_ssim, mask_share


def map_batches(seed: int = 0, n_batches: int = 3) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``(maps, masks, reference maps)`` batches of 2, 3, 4 samples of 1x12x12 (unequal sizes: a metric
    must weight samples, not batches)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_batches):
        b = 2 + k
        maps = torch.rand(b, 1, 12, 12, generator=g) ** 3
        masks = (torch.rand(b, 1, 12, 12, generator=g) > 0.7).float()
        ref = maps + 0.3 * torch.rand(b, 1, 12, 12, generator=g)
        out.append((maps, masks, ref))
    return out


# (Metric class, its pure function, the arguments both take from one of ``map_batches``)
MAP_CASES: list[tuple[type, Callable[..., Tensor], Callable[[tuple[Tensor, Tensor, Tensor]], tuple[Tensor, ...]]]] = [
    (MapEntropy, map_entropy, lambda t: (t[0],)),
    (MaskShare, mask_share, lambda t: (t[0], t[1])),
    (MapSSIM, map_ssim, lambda t: (t[0], t[2])),
]


def quality_metrics() -> dict[str, tuple[Any, str]]:
    """Fresh quality metrics, each with the kind of arguments its ``update`` takes (see ``update_all``)."""
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


def quality_data() -> tuple[nn.Module, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """A seeded model and one batch of 8: inputs, maps, masks, targets and scores."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 6, 6, generator=gen)
    maps = torch.randn(8, 1, 6, 6, generator=gen)
    masks = (torch.rand(8, 1, 6, 6, generator=gen) > 0.5).float()
    target = torch.randint(0, 3, (8,), generator=gen)
    scores = torch.rand(8, 3, generator=gen)
    return model, x, maps, masks, target, scores


def update_all(metrics: dict[str, tuple[Any, str]], rows: slice) -> None:
    """Updates every metric of ``quality_metrics()`` with ``rows`` of ``quality_data()``."""
    model, x, maps, masks, target, scores = quality_data()
    for metric, kind in metrics.values():
        if kind == "model":
            metric.update(model, x[rows], maps[rows], target[rows])
        elif kind == "masks":
            metric.update(maps[rows], masks[rows])
        elif kind == "explain":
            metric.update(model, x[rows], target[rows])
        else:
            metric.update(scores[rows])


def ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One rank of a gloo process group; computes (torchmetrics syncs the states) and saves
    ``rank<r>.pt`` in ``out_dir`` with:

    * ``"quality"``: every quality metric updated with this rank's half of ``quality_data()`` in two
      updates;
    * ``"maps"``: every map metric updated with the ``map_batches()`` whose index is ``rank`` modulo
      ``world`` (so the ranks hold different numbers of samples).
    """
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        metrics = quality_metrics()
        half = 8 // world
        update_all(metrics, slice(rank * half, rank * half + half // 2))
        update_all(metrics, slice(rank * half + half // 2, (rank + 1) * half))
        quality = {name: metric.compute() for name, (metric, _) in metrics.items()}
        maps = {}
        for cls, _, args in MAP_CASES:
            metric = cls()
            for k, batch in enumerate(map_batches()):
                if k % world == rank:
                    metric.update(*args(batch))
            maps[cls.__name__] = metric.compute()
        torch.save({"quality": quality, "maps": maps}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
