"""Metrics updated on 2 DDP ranks (gloo, spawned processes) equal the same metrics in one process:
the quality metrics (each rank holds half of one batch) and the map metrics (the ranks hold
different numbers of samples). One spawn serves both."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers.metrics import MAP_CASES, ddp_worker, map_batches, quality_metrics, update_all

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.numerics]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_synced_over_two_ranks_equal_one_process(tmp_path) -> None:
    mp.start_processes(ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, start_method="spawn")
    single = quality_metrics()
    update_all(single, slice(0, 8))
    expected = {name: metric.compute() for name, (metric, _) in single.items()}
    batches = map_batches()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for name, value in expected.items():
            assert torch.allclose(got["quality"][name], value, atol=1e-6, equal_nan=True), (rank, name)
        # map metrics: the pure function over the concatenation of every rank's batches
        for cls, fn, args in MAP_CASES:
            whole = tuple(torch.cat(parts) for parts in zip(*(args(b) for b in batches)))
            assert torch.allclose(got["maps"][cls.__name__].double(), fn(*whole).double(), atol=1e-6), (
                rank,
                cls.__name__,
            )
