"""Randomization (sanity-check) metrics as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.randomization`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.utilities import dim_zero_cat

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.base import _ExplainerMetric
from lightning_xai.metrics.functional._common import ExplainFn
from lightning_xai.metrics.functional.randomization import (
    data_randomization,
    input_invariance,
    parameter_randomization,
    randomization_layers,
)
from lightning_xai.metrics.functional.similarity import check_measure

__all__ = [
    "DataRandomization",
    "InputInvariance",
    "ParameterRandomization",
]


class ParameterRandomization(_ExplainerMetric):
    """Model parameter randomisation test (see
    :func:`~lightning_xai.metrics.functional.parameter_randomization`).

    ``compute()`` returns the mean similarity per randomised layer, ``[L]`` in the order of
    :attr:`layers` (set by the first update); lower is better (the map depends on the weights).
    """

    name = "parameter_randomization"

    higher_is_better = False

    def __init__(self, explainer: ExplainFn, mode: str = "cascading", measure: str = "spearman",
                 order: str = "top_down", seed: int = 43, batch_size: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(explainer, **kwargs)
        if mode not in ("cascading", "independent"):
            raise ValueError(f"Expected argument `mode` in ('cascading', 'independent'), but got {mode!r}.")
        if order not in ("top_down", "bottom_up"):
            raise ValueError(f"Expected argument `order` in ('top_down', 'bottom_up'), but got {order!r}.")
        self.mode, self.measure, self.order = mode, check_measure(measure), order
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.layers: list[str] = []
        self.add_state("rows", default=[], dist_reduce_fx="cat")

    def update(self, model: nn.Module, inputs: Tensor, target: TargetType = None,
               attributions: Tensor | None = None) -> None:  # fmt: skip
        self.layers = randomization_layers(model, self.order)
        sims = parameter_randomization(
            model, inputs, self.explainer, target, mode=self.mode, measure=self.measure, order=self.order,
            seed=self.seed, attributions=attributions, batch_size=self.batch_size,
        )  # fmt: skip
        self.rows.append(sims.T.detach().to(torch.float64))  # [B, L]
        self._accumulate(sims.mean(dim=0))

    def compute(self) -> Tensor:
        """``[L]`` mean similarity per randomised layer (NaN-free samples only)."""
        rows = dim_zero_cat(self.rows)
        return torch.nanmean(rows, dim=0).to(torch.get_default_dtype())


class DataRandomization(_ExplainerMetric):
    """Mean similarity between maps of a model and of its copy trained on permuted labels (see
    :func:`~lightning_xai.metrics.functional.data_randomization`); lower is better."""

    name = "data_randomization"

    higher_is_better = False

    def __init__(self, explainer: ExplainFn, measure: str = "spearman", batch_size: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(explainer, **kwargs)
        self.measure = check_measure(measure)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, random_model: nn.Module, inputs: Tensor, target: TargetType = None) -> None:
        self._accumulate(
            data_randomization(
                model, random_model, inputs, self.explainer, target, measure=self.measure, batch_size=self.batch_size
            )  # fmt: skip
        )


class InputInvariance(_ExplainerMetric):
    """Share of inputs whose map is invariant to a constant input shift absorbed by the first
    layer (see :func:`~lightning_xai.metrics.functional.input_invariance`); higher is better."""

    name = "input_invariance"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return input_invariance(model, inputs, explainer, target, attributions=maps, **kwargs)

    higher_is_better = True

    def __init__(self, explainer: ExplainFn, shift: float = -1.0, atol: float = 1e-4,
                 batch_size: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(explainer, **kwargs)
        self.shift = check_float("shift", shift)
        self.atol = check_float("atol", atol, 0.0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, target: TargetType = None) -> None:
        self._accumulate(
            input_invariance(
                model, inputs, self.explainer, target, shift=self.shift, atol=self.atol, batch_size=self.batch_size
            )  # fmt: skip
        )
