"""Faithfulness metrics as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.faithfulness`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.base import _FiniteMean, _SeededDraws
from lightning_xai.metrics.functional._common import BaselineType
from lightning_xai.metrics.functional.faithfulness import (
    _check_order,
    _deletion_curve_update,
    curve_auc,
    deletion_auc,
    faithfulness_correlation,
    infidelity,
    insertion_auc,
    pixel_flipping,
    region_perturbation,
)

__all__ = [
    "DeletionAUC",
    "FaithfulnessCorrelation",
    "Infidelity",
    "InsertionAUC",
    "PixelFlipping",
    "RegionPerturbation",
]


class DeletionAUC(_FiniteMean):
    """Mean deletion AUC (see :func:`~lightning_xai.metrics.functional.deletion_auc`); lower is better.

    Examples:
        >>> import torch
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> metric = DeletionAUC(steps=4)
        >>> metric.update(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
        >>> metric.compute().shape
        torch.Size([])
    """

    name = "deletion_auc"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return deletion_auc(model, inputs, maps, target, **kwargs)

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
        >>> import torch
        >>> metric = InsertionAUC(steps=4)
        >>> metric.update(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4))
        >>> 0 <= float(metric.compute()) <= 1
        True
    """

    name = "insertion_auc"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return insertion_auc(model, inputs, maps, target, **kwargs)

    higher_is_better = True
    _insert = True

    def __init__(self, steps: int = 20, baseline: BaselineType = "blur", softmax: bool = True,
                 batch_size: int | None = 256, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(steps=steps, baseline=baseline, softmax=softmax, batch_size=batch_size, **kwargs)


class PixelFlipping(_FiniteMean):
    """Mean normalised area under the pixel-flipping curve (see
    :func:`~lightning_xai.metrics.functional.pixel_flipping`); lower is better for ``"morf"``,
    higher for ``"lerf"`` (``higher_is_better`` describes the default ``"morf"``)."""

    name = "pixel_flipping"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return curve_auc(pixel_flipping(model, inputs, maps, target, **kwargs))

    monitor_defaults = (("features_in_step", 16),)

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

    name = "region_perturbation"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return region_perturbation(model, inputs, maps, target, **kwargs).mean(dim=1)

    monitor_defaults = (("patch_size", 4), ("regions", 16))

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

    name = "faithfulness_correlation"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return faithfulness_correlation(model, inputs, maps, target, **kwargs)

    monitor_defaults = (("runs", 32), ("subset_size", 16))

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

    name = "infidelity"

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return infidelity(model, inputs, maps, target, **kwargs)

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
