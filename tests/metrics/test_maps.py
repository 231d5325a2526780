"""The map metrics: each Metric class equals its pure function over several updates, also under DDP."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from lightning_xai.metrics import MapEntropy, MapSSIM, MaskShare
from lightning_xai.metrics.functional import map_entropy, map_ssim, mask_share


def _batches(seed: int = 0, n_batches: int = 3) -> list[tuple[Tensor, Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_batches):
        b = 2 + k  # unequal batch sizes: the metric must weight samples, not batches
        maps = torch.rand(b, 1, 12, 12, generator=g) ** 3
        masks = (torch.rand(b, 1, 12, 12, generator=g) > 0.7).float()
        ref = maps + 0.3 * torch.rand(b, 1, 12, 12, generator=g)
        out.append((maps, masks, ref))
    return out


CASES: list[tuple[type, Callable[..., Tensor], Callable[[tuple[Tensor, Tensor, Tensor]], tuple[Tensor, ...]]]] = [
    (MapEntropy, map_entropy, lambda t: (t[0],)),
    (MaskShare, mask_share, lambda t: (t[0], t[1])),
    (MapSSIM, map_ssim, lambda t: (t[0], t[2])),
]


@pytest.mark.parametrize(("cls", "fn", "args"), CASES, ids=[c[0].__name__ for c in CASES])
def test_metric_class_equals_function_over_several_updates(cls, fn, args) -> None:
    batches = _batches()
    metric = cls()
    for batch in batches:
        metric.update(*args(batch))
    # the function over the concatenation of every batch: a per-sample mean
    whole = tuple(torch.cat(parts) for parts in zip(*(args(b) for b in batches)))
    expected = fn(*whole)
    assert torch.allclose(metric.compute().double(), expected.double(), atol=1e-6)
    # and it is not simply the last batch's value or the mean of batch means
    batch_means = torch.stack([fn(*args(b)) for b in batches]).mean()
    assert not torch.allclose(expected.double(), batch_means.double(), atol=1e-9)
    metric.reset()
    metric.update(*args(batches[0]))
    assert torch.allclose(metric.compute().double(), fn(*args(batches[0])).double(), atol=1e-6)


def test_function_values_on_known_maps() -> None:
    uniform = torch.ones(1, 1, 4, 4)
    point = torch.zeros(1, 1, 4, 4)
    point[0, 0, 1, 2] = 5.0
    assert map_entropy(uniform).item() == pytest.approx(1.0)
    assert map_entropy(point).item() == pytest.approx(0.0, abs=1e-9)
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2] = 1.0
    assert mask_share(point, mask).item() == pytest.approx(1.0)
    assert mask_share(uniform, mask).item() == pytest.approx(0.5)
    assert map_ssim(point, point).item() == pytest.approx(1.0, abs=1e-6)


def test_metrics_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        MapEntropy().update(torch.rand(4, 4))
    with pytest.raises(ValueError, match="masks"):
        MaskShare().update(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 5, 5))
    with pytest.raises(ValueError, match="equal shape"):
        MapSSIM().update(torch.rand(2, 1, 8, 8), torch.rand(1, 1, 8, 8))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        batches = _batches()
        results = {}
        for cls, _, args in CASES:
            metric = cls()
            for k, batch in enumerate(batches):
                if k % world == rank:  # each rank sees a different share of the batches
                    metric.update(*args(batch))
            results[cls.__name__] = metric.compute()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_metrics_sync_across_two_ddp_processes(tmp_path) -> None:
    mp.start_processes(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    batches = _batches()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for cls, fn, args in CASES:
            whole = tuple(torch.cat(parts) for parts in zip(*(args(b) for b in batches)))
            assert torch.allclose(got[cls.__name__].double(), fn(*whole).double(), atol=1e-6), cls.__name__
