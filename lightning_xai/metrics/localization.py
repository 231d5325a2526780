"""Localization metrics as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.localization`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from torch import Tensor

from lightning_xai.metrics.base import _FiniteMean
from lightning_xai.metrics.functional.localization import (
    _mask_aupr_update,
    _mask_mass_update,
    _pointing_game_update,
    mask_aupr,
    mask_mass,
    pointing_game,
)

__all__ = [
    "MaskAUPR",
    "MaskMass",
    "PointingGame",
]


def _on_masks(fn: Callable[[Tensor, Tensor], Tensor]) -> Any:
    """The ``per_sample`` function of a mask metric: ``fn(maps, masks)``, other arguments ignored."""

    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN202, ARG001
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return fn(maps, masks)

    return staticmethod(per_sample)


class _MaskScore(_FiniteMean):
    """Mean of a per-sample score of maps against ground-truth masks: ``update(attributions, masks)``."""

    higher_is_better = True
    needs_masks = True
    _update_fn: ClassVar[Callable[[Tensor, Tensor], Tensor]]

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(type(self)._update_fn(attributions, masks))


class PointingGame(_MaskScore):
    """Pointing-game accuracy (see :func:`~lightning_xai.metrics.functional.pointing_game`).

    Examples:
        >>> import torch
        >>> mask = torch.zeros(2, 1, 4, 4); mask[..., :2, :2] = 1
        >>> metric = PointingGame()
        >>> metric.update(mask, mask)
        >>> metric.compute()
        tensor(1.)
    """

    name = "pointing_game"
    per_sample = _on_masks(pointing_game)
    _update_fn = staticmethod(_pointing_game_update)


class MaskAUPR(_MaskScore):
    """Mean AUPR of maps against masks (see :func:`~lightning_xai.metrics.functional.mask_aupr`)."""

    name = "mask_aupr"
    per_sample = _on_masks(mask_aupr)
    _update_fn = staticmethod(_mask_aupr_update)


class MaskMass(_MaskScore):
    """Mean positive attribution mass inside masks (see :func:`~lightning_xai.metrics.functional.mask_mass`)."""

    name = "mask_mass"
    per_sample = _on_masks(mask_mass)
    _update_fn = staticmethod(_mask_mass_update)
