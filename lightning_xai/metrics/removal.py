"""Removal-and-retraining metrics (ROAD, ROAR) as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.removal`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.base import ExplanationMetric, _SeededDraws
from lightning_xai.metrics.functional.removal import DEFAULT_FRACTIONS, _check_fractions, road

__all__ = [
    "ROAD",
    "ROAR",
]


class ROAD(_SeededDraws, Metric):
    """Mean ROAD curve (see :func:`~lightning_xai.metrics.functional.road`): ``[F]`` mean target
    score per removed fraction; for ``"morf"`` lower is better."""

    name = "road"

    is_differentiable = False
    full_state_update = False
    higher_is_better = False
    needs_model = True

    def __init__(self, fractions: Sequence[float] = DEFAULT_FRACTIONS, order: str = "morf", noise_std: float = 0.01,
                 tol: float = 1e-8, max_iterations: int | None = None, softmax: bool = True, seed: int = 0,
                 batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.fractions = tuple(float(f) for f in _check_fractions(fractions, type(self).__name__).tolist())
        if order not in ("morf", "lerf", "random"):
            raise ValueError(f"Expected argument `order` in ('morf', 'lerf', 'random'), but got {order!r}.")
        self.order = order
        self.noise_std = check_float("noise_std", noise_std, 0.0)
        self.tol = check_float("tol", tol, 0.0)
        self.max_iterations = check_int("max_iterations", max_iterations, 1, allow_none=True)
        self.softmax = bool(softmax)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.add_state("total", default=torch.zeros(len(self.fractions), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetType = None) -> None:
        curves = road(
            model, inputs, attributions, target, fractions=self.fractions, order=self.order,
            noise_std=self.noise_std, tol=self.tol, max_iterations=self.max_iterations, softmax=self.softmax,
            seed=self._batch_seed(), batch_size=self.batch_size,
        )  # fmt: skip
        self.total += curves.detach().to(self.total.device, torch.float64).sum(dim=0)
        self.count += curves.shape[0]

    def compute(self) -> Tensor:
        """``[F]`` mean score per fraction."""
        return (self.total / self.count.clamp_min(1)).to(torch.get_default_dtype())


class ROAR(ExplanationMetric):
    """ROAR accuracies (Hooker et al. 2019) accumulated from the retrained models' predictions.

    Retraining is :func:`~lightning_xai.metrics.functional.roar`'s job; this metric sums, per
    fraction, the correct predictions of the model retrained with top-attributed pixels removed
    and of the one retrained with random pixels removed, over batches and ranks.
    ``compute()`` returns ``{"accuracy": [F], "random_accuracy": [F], "gap": scalar}`` where the
    gap (random minus attribution accuracy, averaged over fractions) is higher for better maps.

    Examples:
        >>> metric = ROAR(fractions=[0.5])
        >>> labels = torch.tensor([0, 1])
        >>> metric.update(torch.tensor([[0, 0]]), torch.tensor([[0, 1]]), labels)
        >>> metric.compute()["gap"]
        tensor(0.5000)
    """

    name = "roar"

    is_differentiable = False
    full_state_update = False
    higher_is_better = True

    def __init__(self, fractions: Sequence[float] = DEFAULT_FRACTIONS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fractions = tuple(float(f) for f in _check_fractions(fractions, type(self).__name__).tolist())
        n = len(self.fractions)
        self.add_state("correct", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("random_correct", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, random_preds: Tensor, labels: Tensor) -> None:
        """``preds``/``random_preds``: ``[F, B]`` class indices (or ``[F, B, K]`` scores) of the two
        retrained models per fraction; ``labels``: ``[B]``."""
        n = len(self.fractions)
        for name, p in (("preds", preds), ("random_preds", random_preds)):
            if p.ndim not in (2, 3) or p.shape[0] != n or p.shape[1] != labels.shape[0]:
                raise ValueError(f"Expected `{name}` of shape [{n}, {labels.shape[0]}(, K)], but got {tuple(p.shape)}.")
        hit = lambda p: ((p.argmax(-1) if p.ndim == 3 else p) == labels.view(1, -1)).sum(dim=1)  # noqa: E731
        self.correct += hit(preds).to(self.correct.device, torch.float64)
        self.random_correct += hit(random_preds).to(self.correct.device, torch.float64)
        self.count += labels.shape[0]

    def compute(self) -> dict[str, Tensor]:
        """Accuracies per fraction and their mean gap."""
        c = self.count.clamp_min(1)
        acc, rnd = (self.correct / c).float(), (self.random_correct / c).float()
        return {"accuracy": acc, "random_accuracy": rnd, "gap": (rnd - acc).mean()}
