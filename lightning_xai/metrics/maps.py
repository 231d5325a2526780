"""torchmetrics ``Metric`` classes over attribution maps (accumulate over batches, sync over DDP)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.metrics.base import ExplanationMetric
from lightning_xai.metrics.functional.maps import _map_entropy_update, _map_ssim_update, _mask_share_update

__all__ = ["MapEntropy", "MaskShare", "MapSSIM"]


class _MeanOfSamples(ExplanationMetric):
    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _accumulate(self, values: Tensor) -> None:
        self.total += values.to(torch.float64).sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).to(torch.get_default_dtype())


class MapEntropy(_MeanOfSamples):
    """Mean normalised entropy of attribution maps (see :func:`~lightning_xai.metrics.functional.map_entropy`).

    Examples:
        >>> metric = MapEntropy()
        >>> metric.update(torch.ones(2, 1, 4, 4))
        >>> metric.compute()
        tensor(1.)
    """

    name = "map_entropy"

    higher_is_better = False

    def update(self, maps: Tensor) -> None:
        self._accumulate(_map_entropy_update(maps))


class MaskShare(_MeanOfSamples):
    """Mean share of attribution energy inside ground-truth masks (see
    :func:`~lightning_xai.metrics.functional.mask_share`)."""

    name = "mask_share"

    higher_is_better = True

    def update(self, maps: Tensor, masks: Tensor) -> None:
        self._accumulate(_mask_share_update(maps, masks))


class MapSSIM(_MeanOfSamples):
    """Mean SSIM between maps and reference maps (see :func:`~lightning_xai.metrics.functional.map_ssim`)."""

    name = "map_ssim"

    higher_is_better = True

    def update(self, maps: Tensor, reference: Tensor) -> None:
        self._accumulate(_map_ssim_update(maps, reference))
