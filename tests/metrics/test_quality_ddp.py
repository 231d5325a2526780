"""A metric updated on 2 DDP ranks (gloo, spawned processes) equals the same metric in one process."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from tests.metrics.helpers import _ddp_metrics, ddp_worker, update_all

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.numerics]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_synced_over_two_ranks_equal_one_process(tmp_path) -> None:
    out = str(tmp_path / "ddp.pt")
    mp.spawn(ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    distributed = torch.load(out)
    single = _ddp_metrics()
    update_all(single, slice(0, 8))
    for name, (metric, _) in single.items():
        expected = metric.compute()
        assert torch.allclose(distributed[name], expected, atol=1e-6, equal_nan=True), name
