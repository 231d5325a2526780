"""The map metrics: each Metric class equals its pure function over several updates (under DDP:
tests/metrics/test_ddp.py)."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.metrics import MapEntropy, MapSSIM, MaskShare
from lightning_xai.metrics.functional import map_entropy, map_ssim, mask_share
from tests.helpers.metrics import MAP_CASES as CASES
from tests.helpers.metrics import map_batches as _batches


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
