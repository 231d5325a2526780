"""Explanation-quality scores as torchmetrics ``Metric`` classes (accumulate over batches, sync
over DDP ranks) over the pure functions in :mod:`lightning_xai.metrics.functional`.

Metrics that perturb inputs take the model in ``update``; those that call an explainer hold it
as configuration (explainers hold no model, so a metric stays picklable). Per-sample values that
are NaN (an empty mask, a constant score) are counted in ``skipped`` and left out of the mean.
Metrics with a ``seed`` draw batch ``i`` (counted since construction or ``reset``) with the seed
``seed + i``, under ``forward`` and ``update`` alike: batches get distinct draws, reruns the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.functional._common import BaselineType, ExplainFn, check_explainer
from lightning_xai.metrics.functional.faithfulness import (
    _check_order,
    _deletion_curve_update,
    curve_auc,
    faithfulness_correlation,
    infidelity,
    pixel_flipping,
    region_perturbation,
)
from lightning_xai.metrics.functional.localisation import _mask_aupr_update, _mask_mass_update, _pointing_game_update
from lightning_xai.metrics.functional.randomisation import (
    data_randomization,
    input_invariance,
    parameter_randomization,
    randomization_layers,
)
from lightning_xai.metrics.functional.reliability import internal_consistency, metric_reliability
from lightning_xai.metrics.functional.removal import DEFAULT_FRACTIONS, _check_fractions, road
from lightning_xai.metrics.functional.robustness import (
    ATTACKS,
    AttackMapFn,
    _check_range,
    _fragility_update,
    local_lipschitz,
    max_sensitivity,
)
from lightning_xai.metrics.functional.similarity import _map_similarity_update, check_measure

__all__ = [
    "DeletionAUC",
    "InsertionAUC",
    "PixelFlipping",
    "RegionPerturbation",
    "FaithfulnessCorrelation",
    "Infidelity",
    "LocalLipschitz",
    "MaxSensitivity",
    "Fragility",
    "PointingGame",
    "MaskAUPR",
    "MaskMass",
    "MapSimilarity",
    "ParameterRandomization",
    "DataRandomization",
    "InputInvariance",
    "ROAR",
    "ROAD",
    "MetricReliability",
    "InternalConsistency",
]


class _FiniteMean(Metric):
    """Mean of per-sample values over every update and rank; NaN values are counted as skipped."""

    is_differentiable = False
    full_state_update = False
    needs_model: bool = False
    """``update(model, inputs, ...)`` (perturbation metrics) rather than ``update(maps, ...)``."""
    needs_masks: bool = False
    """``update(attributions, masks)`` (localisation metrics)."""
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


class _SeededDraws(Metric):
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


# ---------------------------------------------------------------------------------------------
# faithfulness
# ---------------------------------------------------------------------------------------------
class DeletionAUC(_FiniteMean):
    """Mean deletion AUC (see :func:`~lightning_xai.metrics.functional.deletion_auc`); lower is better.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = DeletionAUC(steps=4)
        >>> metric.update(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
        >>> metric.compute().shape
        torch.Size([])
    """

    higher_is_better = False
    needs_model = True
    _insert = False

    def __init__(self, steps: int = 20, baseline: BaselineType = 0.0, softmax: bool = True,
                 batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.steps = check_int("steps", steps, 1)
        self.baseline = baseline
        self.softmax = bool(softmax)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetType = None) -> None:
        curves = _deletion_curve_update(
            model, inputs, attributions, target, steps=self.steps, baseline=self.baseline, insert=self._insert,
            softmax=self.softmax, batch_size=self.batch_size, method=type(self).__name__,
        )  # fmt: skip
        self._accumulate(curve_auc(curves))


class InsertionAUC(DeletionAUC):
    """Mean insertion AUC (see :func:`~lightning_xai.metrics.functional.insertion_auc`); higher is better.

    Examples:
        >>> metric = InsertionAUC(steps=4)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
        >>> 0 <= float(metric.compute()) <= 1
        True
    """

    higher_is_better = True
    _insert = True

    def __init__(self, steps: int = 20, baseline: BaselineType = "blur", softmax: bool = True,
                 batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(steps=steps, baseline=baseline, softmax=softmax, batch_size=batch_size, **kwargs)


class PixelFlipping(_FiniteMean):
    """Mean normalised area under the pixel-flipping curve (see
    :func:`~lightning_xai.metrics.functional.pixel_flipping`); lower is better for ``"morf"``,
    higher for ``"lerf"`` (``higher_is_better`` describes the default ``"morf"``)."""

    higher_is_better = False
    needs_model = True

    def __init__(self, features_in_step: int = 1, order: str = "morf", baseline: BaselineType = "black",
                 softmax: bool = True, batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.features_in_step = check_int("features_in_step", features_in_step, 1)
        self.order = _check_order(order, type(self).__name__)
        self.baseline, self.softmax = baseline, bool(softmax)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetType = None) -> None:
        curves = pixel_flipping(
            model, inputs, attributions, target, features_in_step=self.features_in_step, order=self.order,
            baseline=self.baseline, softmax=self.softmax, batch_size=self.batch_size,
        )  # fmt: skip
        self._accumulate(curve_auc(curves))


class RegionPerturbation(_FiniteMean):
    """Mean area over the perturbation curve (AOPC: the mean score drop over the region steps, see
    :func:`~lightning_xai.metrics.functional.region_perturbation`); higher is better for ``"morf"``,
    lower for ``"lerf"`` (``higher_is_better`` describes the default ``"morf"``)."""

    higher_is_better = True
    needs_model = True

    def __init__(self, patch_size: int = 8, regions: int = 100, order: str = "morf",
                 baseline: BaselineType = "black", softmax: bool = True, batch_size: int | None = 256,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.patch_size = check_int("patch_size", patch_size, 1)
        self.regions = check_int("regions", regions, 1)
        self.order = _check_order(order, type(self).__name__)
        self.baseline, self.softmax = baseline, bool(softmax)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetType = None) -> None:
        drops = region_perturbation(
            model, inputs, attributions, target, patch_size=self.patch_size, regions=self.regions,
            order=self.order, baseline=self.baseline, softmax=self.softmax, batch_size=self.batch_size,
        )  # fmt: skip
        self._accumulate(drops.mean(dim=1))


class FaithfulnessCorrelation(_SeededDraws, _FiniteMean):
    """Mean faithfulness correlation (see
    :func:`~lightning_xai.metrics.functional.faithfulness_correlation`); higher is better.

    Batch ``i`` since construction or :meth:`reset` draws its subsets with the seed ``seed + i``
    (``forward`` and ``update`` alike): successive batches get different draws, a rerun the same
    numbers.
    """

    higher_is_better = True
    needs_model = True

    def __init__(self, runs: int = 100, subset_size: int = 224, baseline: BaselineType = "black",
                 softmax: bool = False, seed: int = 0, batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.runs = check_int("runs", runs, 2)
        self.subset_size = check_int("subset_size", subset_size, 1)
        self.baseline, self.softmax = baseline, bool(softmax)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetType = None) -> None:
        self._accumulate(
            faithfulness_correlation(
                model, inputs, attributions, target, runs=self.runs, subset_size=self.subset_size,
                baseline=self.baseline, softmax=self.softmax, seed=self._batch_seed(),
                batch_size=self.batch_size,
            )
        )  # fmt: skip


class Infidelity(_SeededDraws, _FiniteMean):
    """Mean infidelity (see :func:`~lightning_xai.metrics.functional.infidelity`); lower is better."""

    higher_is_better = False
    needs_model = True

    def __init__(self, runs: int = 16, noise_std: float = 0.1, normalize: bool = True, softmax: bool = False,
                 seed: int = 0, batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(**kwargs)
        self.runs = check_int("runs", runs, 1)
        self.noise_std = check_float("noise_std", noise_std, 0.0)
        self.normalize, self.softmax = bool(normalize), bool(softmax)
        self.seed = check_int("seed", seed, 0)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)

    def update(self, model: nn.Module, inputs: Tensor, attributions: Tensor, target: TargetType = None) -> None:
        self._accumulate(
            infidelity(
                model, inputs, attributions, target, runs=self.runs, noise_std=self.noise_std,
                normalize=self.normalize, softmax=self.softmax, seed=self._batch_seed(),
                batch_size=self.batch_size,
            )
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# robustness (hold an explainer)
# ---------------------------------------------------------------------------------------------
class _ExplainerMetric(_FiniteMean):
    needs_model = True
    needs_explainer = True

    def __init__(self, explainer: ExplainFn, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_explainer(explainer, type(self).__name__)
        self.explainer = explainer


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


# ---------------------------------------------------------------------------------------------
# localisation
# ---------------------------------------------------------------------------------------------
class PointingGame(_FiniteMean):
    """Pointing-game accuracy (see :func:`~lightning_xai.metrics.functional.pointing_game`).

    Examples:
        >>> mask = torch.zeros(2, 1, 4, 4); mask[..., :2, :2] = 1
        >>> metric = PointingGame()
        >>> metric.update(mask, mask)
        >>> metric.compute()
        tensor(1.)
    """

    higher_is_better = True
    needs_masks = True

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(_pointing_game_update(attributions, masks))


class MaskAUPR(_FiniteMean):
    """Mean AUPR of maps against masks (see :func:`~lightning_xai.metrics.functional.mask_aupr`)."""

    higher_is_better = True
    needs_masks = True

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(_mask_aupr_update(attributions, masks))


class MaskMass(_FiniteMean):
    """Mean positive attribution mass inside masks (see :func:`~lightning_xai.metrics.functional.mask_mass`)."""

    higher_is_better = True
    needs_masks = True

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(_mask_mass_update(attributions, masks))


class MapSimilarity(_FiniteMean):
    """Mean similarity of maps to reference maps (see
    :func:`~lightning_xai.metrics.functional.map_similarity`)."""

    higher_is_better = True

    def __init__(self, measure: str = "spearman", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.measure = check_measure(measure)

    def update(self, maps: Tensor, reference: Tensor) -> None:
        self._accumulate(_map_similarity_update(maps, reference, self.measure))


# ---------------------------------------------------------------------------------------------
# sanity checks
# ---------------------------------------------------------------------------------------------
class ParameterRandomization(_ExplainerMetric):
    """Model parameter randomisation test (see
    :func:`~lightning_xai.metrics.functional.parameter_randomization`).

    ``compute()`` returns the mean similarity per randomised layer, ``[L]`` in the order of
    :attr:`layers` (set by the first update); lower is better (the map depends on the weights).
    """

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


# ---------------------------------------------------------------------------------------------
# remove and evaluate
# ---------------------------------------------------------------------------------------------
class ROAD(_SeededDraws, Metric):
    """Mean ROAD curve (see :func:`~lightning_xai.metrics.functional.road`): ``[F]`` mean target
    score per removed fraction; for ``"morf"`` lower is better."""

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


class ROAR(Metric):
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


class _ScoreRows(Metric):
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
