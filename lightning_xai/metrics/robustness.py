"""Robustness metrics as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.robustness`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.base import _ExplainerMetric, _SeededDraws
from lightning_xai.metrics.functional._common import ExplainFn
from lightning_xai.metrics.functional.robustness import (
    ATTACKS,
    AttackMapFn,
    _check_range,
    _fragility_update,
    fragility,
    local_lipschitz,
    max_sensitivity,
)

__all__ = [
    "Fragility",
    "LocalLipschitz",
    "MaxSensitivity",
]


class LocalLipschitz(_SeededDraws, _ExplainerMetric):
    """Mean local Lipschitz estimate of ``explainer`` (see
    :func:`~lightning_xai.metrics.functional.local_lipschitz`); lower is better.

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> metric = LocalLipschitz(Saliency(), samples=4)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4))
        >>> metric.compute()
        tensor(0.)
    """

    name = "local_lipschitz"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return local_lipschitz(model, inputs, explainer, target, attributions=maps, **kwargs)

    monitor_defaults = (("samples", 4),)

    higher_is_better = False

    def __init__(self, explainer: ExplainFn, samples: int = 10, std: float = 0.1, seed: int = 0,
                 batch_size: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(explainer, **kwargs)
        self.samples = check_int("samples", samples, 1)
        self.std = check_float("std", std, 0.0)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, target: TargetType = None,
               attributions: Tensor | None = None) -> None:  # fmt: skip
        self._accumulate(
            local_lipschitz(
                model, inputs, self.explainer, target, attributions=attributions, samples=self.samples,
                std=self.std, seed=self._batch_seed(), batch_size=self.batch_size,
            )
        )  # fmt: skip


class MaxSensitivity(_SeededDraws, _ExplainerMetric):
    """Mean max-sensitivity of ``explainer`` (see
    :func:`~lightning_xai.metrics.functional.max_sensitivity`); lower is better."""

    name = "max_sensitivity"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return max_sensitivity(model, inputs, explainer, target, attributions=maps, **kwargs)

    monitor_defaults = (("samples", 4),)

    higher_is_better = False

    def __init__(self, explainer: ExplainFn, samples: int = 10, radius: float = 0.2, seed: int = 0,
                 batch_size: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(explainer, **kwargs)
        self.samples = check_int("samples", samples, 1)
        self.radius = check_float("radius", radius, 0.0)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, target: TargetType = None,
               attributions: Tensor | None = None) -> None:  # fmt: skip
        self._accumulate(
            max_sensitivity(
                model, inputs, self.explainer, target, attributions=attributions, samples=self.samples,
                radius=self.radius, seed=self._batch_seed(), batch_size=self.batch_size,
            )
        )  # fmt: skip


class Fragility(_SeededDraws, _ExplainerMetric):
    """Mean top-k intersection after the fragility attack (see
    :func:`~lightning_xai.metrics.functional.fragility`); higher is better (a robust map). The
    mean centre-of-mass shift is kept too: :meth:`compute_all` returns both.

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> metric = Fragility(Saliency(), iterations=2)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4))
        >>> metric.compute()  # a linear model's gradient map cannot move
        tensor(1.)
    """

    name = "fragility"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return fragility(model, inputs, explainer, target, **kwargs).topk_intersection

    monitor_defaults = (("iterations", 4),)

    higher_is_better = True

    def __init__(self, explainer: ExplainFn, attack: str = "topk", epsilon: float = 8 / 255, iterations: int = 8,
                 step_size: float | None = None, softplus_beta: float = 10.0,
                 input_range: tuple[float, float] | None = None, attack_map: AttackMapFn | None = None,
                 candidates: int = 8, k: float = 0.1, seed: int = 0, batch_size: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(explainer, **kwargs)
        if attack not in ATTACKS:
            raise ValueError(f"Expected argument `attack` to be one of {ATTACKS}, but got {attack!r}.")
        self.attack = attack
        self.epsilon = check_float("epsilon", epsilon, 0.0)
        self.iterations = check_int("iterations", iterations, 1)
        self.step_size = None if step_size is None else check_float("step_size", step_size, 0.0)
        self.softplus_beta = check_float("softplus_beta", softplus_beta, 0.0)
        if self.softplus_beta <= 0:
            raise ValueError(f"Expected argument `softplus_beta` to be positive, but got {softplus_beta}.")
        self.input_range = _check_range(input_range, type(self).__name__)
        if attack_map is not None and not callable(attack_map):
            raise TypeError(f"Expected `attack_map` to be callable or None, but got {type(attack_map).__name__}.")
        self.attack_map = attack_map
        self.candidates = check_int("candidates", candidates, 1)
        self.k = check_float("k", k, 0.0, 1.0)
        if not 0.0 < self.k < 1.0:
            raise ValueError(f"Expected argument `k` to be a fraction in (0, 1), but got {k}.")
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.add_state("shift_total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, model: nn.Module, inputs: Tensor, target: TargetType = None) -> None:
        result = _fragility_update(
            model, inputs, self.explainer, target, attack=self.attack, epsilon=self.epsilon,
            iterations=self.iterations, step_size=self.step_size, softplus_beta=self.softplus_beta,
            input_range=self.input_range, attack_map=self.attack_map, candidates=self.candidates, k=self.k,
            seed=self._batch_seed(), batch_size=self.batch_size,
        )  # fmt: skip
        self._accumulate(result.topk_intersection)
        self.shift_total += result.center_shift.detach().to(self.shift_total.device, torch.float64).sum()

    def compute_all(self) -> dict[str, Tensor]:
        """``{"topk_intersection": ..., "center_shift": ...}`` means."""
        count = self.count.clamp_min(1)
        return {"topk_intersection": self.compute(), "center_shift": (self.shift_total / count).float()}
