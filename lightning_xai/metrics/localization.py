"""Localization metrics as torchmetrics ``Metric`` classes over
:mod:`lightning_xai.metrics.functional.localization`."""

from __future__ import annotations

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


class PointingGame(_FiniteMean):
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
    needs_masks = True

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return pointing_game(maps, masks)

    higher_is_better = True
    needs_masks = True

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(_pointing_game_update(attributions, masks))


class MaskAUPR(_FiniteMean):
    """Mean AUPR of maps against masks (see :func:`~lightning_xai.metrics.functional.mask_aupr`)."""

    name = "mask_aupr"
    needs_masks = True

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return mask_aupr(maps, masks)

    higher_is_better = True
    needs_masks = True

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(_mask_aupr_update(attributions, masks))


class MaskMass(_FiniteMean):
    """Mean positive attribution mass inside masks (see :func:`~lightning_xai.metrics.functional.mask_mass`)."""

    name = "mask_mass"
    needs_masks = True

    @staticmethod
    def per_sample(model, inputs, maps, target, masks, explainer, **kwargs):  # noqa: ANN001, ANN205, ARG004
        """``[B]`` values for :data:`~lightning_xai.metrics.evaluate.METRICS`."""
        return mask_mass(maps, masks)

    higher_is_better = True
    needs_masks = True

    def update(self, attributions: Tensor, masks: Tensor) -> None:
        self._accumulate(_mask_mass_update(attributions, masks))
