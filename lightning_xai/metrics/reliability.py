"""Reliability of metrics as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.reliability`."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from lightning_xai.metrics.base import ExplanationMetric
from lightning_xai.metrics.functional.reliability import internal_consistency, metric_reliability

__all__ = [
    "InternalConsistency",
    "MetricReliability",
]


class _ScoreRows(ExplanationMetric):
    """Rows of ``[B, columns >= 2]`` scores gathered over batches and DDP ranks."""

    is_differentiable = False
    full_state_update = False
    higher_is_better = True
    _rows_name: ClassVar[str] = "samples"
    _columns_name: ClassVar[str] = "columns"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor) -> None:
        if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[1] < 2:
            shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
            raise ValueError(
                f"Expected `scores` of shape [{self._rows_name}, {self._columns_name} >= 2], but got {shape}."
            )
        _check_columns(self.scores, scores, self._columns_name)
        self.scores.append(scores.detach().to(torch.float64))


class MetricReliability(_ScoreRows):
    """Inter-rater reliability (ordinal Krippendorff alpha) of a metric across explainers (see
    :func:`~lightning_xai.metrics.functional.metric_reliability`): update with ``[B, E]`` scores
    of ``E`` explainers on ``B`` samples; rows are gathered over batches and ranks."""

    name = "metric_reliability"

    _rows_name = "samples"
    _columns_name = "explainers"

    def compute(self) -> Tensor:
        """Scalar alpha over every sample seen."""
        return metric_reliability(dim_zero_cat(self.scores)).to(torch.get_default_dtype())


class InternalConsistency(_ScoreRows):
    """Internal consistency (Cronbach's alpha) of several metrics over the same units (Tomsett et
    al. 2020; see :func:`~lightning_xai.metrics.functional.internal_consistency`): update with
    ``[B, M]`` scores of ``M`` metrics on ``B`` units (samples, or explainers); the rows are
    gathered over batches and DDP ranks, so the result equals the function on every row at once.
    Standardise metrics of different scales and flip lower-is-better ones before updating.

    Examples:
        >>> metric = InternalConsistency()
        >>> metric.update(torch.tensor([[1.0, 2.0], [2.0, 4.0]]))
        >>> metric.update(torch.tensor([[3.0, 6.0]]))
        >>> metric.compute()
        tensor(0.8889)
    """

    name = "internal_consistency"

    _rows_name = "units"
    _columns_name = "metrics"

    def compute(self) -> Tensor:
        """Scalar alpha over every unit seen (NaN with fewer than two units)."""
        rows = dim_zero_cat(self.scores)
        if rows.shape[0] < 2:
            return torch.tensor(float("nan"))
        return internal_consistency(rows.T).to(torch.get_default_dtype())


def _check_columns(seen: list[Tensor], scores: Tensor, what: str) -> None:
    """Every update of a row-gathering metric has the same number of columns."""
    if seen and seen[0].shape[1] != scores.shape[1]:
        raise ValueError(
            f"Expected {seen[0].shape[1]} {what} per row as in earlier updates, but got {scores.shape[1]}."
        )
