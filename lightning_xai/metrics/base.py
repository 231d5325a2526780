"""Shared bases of the Metric classes: :class:`ExplanationMetric` (what the registry reads off every
class), the finite mean with its ``skipped`` count, seeded draws per batch and explainer-holding
metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_xai.metrics.functional._common import ExplainFn, check_explainer

__all__ = ["ExplanationMetric", "PerSampleFn"]

PerSampleFn = Callable[..., Tensor]
"""``fn(model, inputs, maps, target, masks, explainer, **kwargs) -> [B]`` per-sample values."""


class ExplanationMetric(Metric):
    """Base of every Metric class of :mod:`lightning_xai.metrics`: the class attributes the metric
    registry (:data:`lightning_xai.metrics.METRIC_CLASSES`) and the per-sample table
    (:data:`lightning_xai.metrics.evaluate.METRICS`) are derived from.

    Attributes:
        name: The metric's name: its function's name in :mod:`lightning_xai.metrics.functional`
            (``"deletion_auc"`` for :class:`~lightning_xai.metrics.DeletionAUC`).
        needs_masks: Whether it scores maps against ground-truth masks.
        per_sample: ``fn(model, inputs, maps, target, masks, explainer, **kwargs)`` returning one
            value per input, for metrics a monitor can shard over ranks; ``None`` for the others
            (curves, retraining, score tables).
        monitor_defaults: Keyword arguments of ``per_sample`` sized for monitoring a small probe
            set during training.
    """

    name: ClassVar[str] = ""
    needs_masks: ClassVar[bool] = False
    per_sample: ClassVar[PerSampleFn | None] = None
    monitor_defaults: ClassVar[tuple[tuple[str, Any], ...]] = ()


class _FiniteMean(ExplanationMetric):
    """Mean of per-sample values over every update and rank; NaN values are counted as skipped."""

    is_differentiable = False
    full_state_update = False
    needs_model: bool = False
    """``update(model, inputs, ...)`` (perturbation metrics) rather than ``update(maps, ...)``."""
    needs_explainer: bool = False
    """Holds an explainer and calls it (robustness and sanity checks)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, values: Tensor) -> None:
        values = values.detach().to(self.total.device, torch.float64).reshape(-1)
        finite = torch.isfinite(values)
        self.total += values[finite].sum()
        self.count += finite.sum()
        self.skipped += (~finite).sum()

    def compute(self) -> Tensor:
        """The mean over every finite per-sample value (NaN before any)."""
        if int(self.count) == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).to(torch.get_default_dtype())


class _SeededDraws(ExplanationMetric):
    """Random draws that differ from batch to batch and repeat from run to run.

    Batch ``i`` (counted from 0 since construction or the last :meth:`reset`) draws with the seed
    ``seed + i``. ``forward`` counts as one batch whichever way torchmetrics runs it (one
    ``update`` on a fresh state, or two), so its batch value equals a fresh metric's ``update``
    on that batch at the same position, and ``forward`` and ``update`` accumulate the same
    values. The counter is a plain attribute (not a metric state): torchmetrics' own reset inside
    ``forward`` leaves it alone.
    """

    seed: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches = 0  # batches drawn since construction or the last reset
        self._pinned_seed: int | None = None  # the batch's seed while forward runs

    def _batch_seed(self) -> int:
        """The seed of the batch being updated; moves the counter on (outside ``forward``)."""
        if self._pinned_seed is not None:
            return self._pinned_seed
        self._batches += 1
        return self.seed + self._batches - 1

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """As :meth:`torchmetrics.Metric.forward`; every ``update`` it runs draws with this batch's seed."""
        batches = self._batches
        self._pinned_seed = self.seed + batches
        try:
            return super().forward(*args, **kwargs)
        finally:
            self._pinned_seed = None
            self._batches = batches + 1

    def reset(self) -> None:
        """Reset the states and, outside ``forward``, restart the draws at ``seed``."""
        super().reset()
        if getattr(self, "_pinned_seed", None) is None:
            self._batches = 0


# robustness (hold an explainer)
class _ExplainerMetric(_FiniteMean):
    needs_model = True
    needs_explainer = True

    def __init__(self, explainer: ExplainFn, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_explainer(explainer, type(self).__name__)
        self.explainer = explainer
