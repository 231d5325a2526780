"""Localisation against ground-truth masks: pointing game, AUPR, attribution mass inside the mask.

Masks are ``[B, 1, H, W]`` (or ``[B, H, W]``) with values > 0.5 inside the object; the shapes
dataset (:mod:`lightning_xai.data`) ships them, users pass their own (human-annotated masks,
Mohseni et al. 2018). Maps are reduced to one value per pixel by summing their channels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.metrics.functional._common import check_batch, check_finite, check_masks, pixel_scores

__all__ = ["pointing_game", "mask_aupr", "mask_mass"]


def _prepare(attributions: object, masks: object, method: str) -> tuple[Tensor, Tensor]:
    maps = check_batch("attributions", attributions, method=method)
    check_finite("attributions", maps, method=method)
    inside = check_masks(masks, maps, method=method)
    return pixel_scores(maps), inside


def _pointing_game_update(attributions: Tensor, masks: Tensor) -> Tensor:
    scores, inside = _prepare(attributions, masks, "pointing_game")
    at_max = scores == scores.amax(dim=1, keepdim=True)
    hit = (at_max & inside).any(dim=1).to(attributions.dtype)
    return hit.masked_fill(~inside.any(dim=1), float("nan"))


def pointing_game(attributions: Tensor, masks: Tensor) -> Tensor:
    """Pointing game (Zhang et al. 2016): 1 where the map's maximum falls inside the mask.

    Where several pixels share the maximum, any of them inside counts as a hit (as quantus
    ``PointingGame``). An empty mask gives NaN (the Metric class skips it).

    Args:
        attributions: ``[B, C, H, W]`` maps (channels are summed).
        masks: ``[B, 1, H, W]`` ground-truth masks.

    Returns:
        ``[B]`` hits in ``{0., 1.}`` (NaN for an empty mask).

    Raises:
        ValueError: ``masks`` is None or its shape does not match.

    Examples:
        >>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2, :2] = 1
        >>> pointing_game(mask, mask)
        tensor([1.])
    """
    return _pointing_game_update(attributions, masks)


def _mask_aupr_update(attributions: Tensor, masks: Tensor) -> Tensor:
    scores, inside = _prepare(attributions, masks, "mask_aupr")
    order = torch.sort(scores.to(torch.float64), dim=1, descending=True, stable=True)
    sorted_scores, idx = order.values, order.indices
    positives = inside.gather(1, idx).to(torch.float64)
    tp = positives.cumsum(dim=1)
    n_pos = tp[:, -1:]
    rank = torch.arange(1, scores.shape[1] + 1, device=scores.device, dtype=torch.float64)
    precision = tp / rank
    # one threshold per distinct score: only the last pixel of a run of ties is an operating point
    last = torch.ones_like(positives, dtype=torch.bool)
    last[:, :-1] = sorted_scores[:, :-1] != sorted_scores[:, 1:]
    tp_at = torch.where(last, tp, torch.zeros_like(tp))
    previous = torch.cummax(tp_at, dim=1).values
    previous = torch.cat([torch.zeros_like(previous[:, :1]), previous[:, :-1]], dim=1)
    gain = torch.where(last, tp - previous, torch.zeros_like(tp))
    ap = (gain * precision).sum(dim=1) / n_pos.squeeze(1)
    return ap.masked_fill(n_pos.squeeze(1) == 0, float("nan")).to(attributions.dtype)


def mask_aupr(attributions: Tensor, masks: Tensor) -> Tensor:
    """Area under the precision-recall curve of the map as a detector of the mask's pixels
    (average precision, Arun et al. 2020), one threshold per distinct map value.

    Equals scikit-learn's ``average_precision_score(mask.flatten(), map.flatten())`` per sample.
    1.0: every pixel inside scores above every pixel outside.

    Args:
        attributions: ``[B, C, H, W]`` maps (channels are summed; higher = more salient).
        masks: ``[B, 1, H, W]`` ground-truth masks.

    Returns:
        ``[B]`` areas in ``[0, 1]`` (NaN for an empty mask).

    Examples:
        >>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2, :2] = 1
        >>> mask_aupr(mask, mask)
        tensor([1.])
    """
    return _mask_aupr_update(attributions, masks)


def _mask_mass_update(attributions: Tensor, masks: Tensor) -> Tensor:
    scores, inside = _prepare(attributions, masks, "mask_mass")
    positive = scores.to(torch.float64).clamp_min(0)
    total = positive.sum(dim=1)
    mass = (positive * inside).sum(dim=1) / total.clamp_min(1e-300)
    return mass.masked_fill(total == 0, float("nan")).to(attributions.dtype)


def mask_mass(attributions: Tensor, masks: Tensor) -> Tensor:
    """Relevance mass inside the mask (Kohlbrenner et al. 2020): the share of the map's positive
    attribution that falls on the object.

    Unlike :func:`~lightning_xai.metrics.functional.mask_share` (``|map|`` energy), negative
    evidence is ignored, as quantus ``RelevanceMassAccuracy``.

    Args:
        attributions: ``[B, C, H, W]`` maps (channels summed before clipping at zero).
        masks: ``[B, 1, H, W]`` ground-truth masks.

    Returns:
        ``[B]`` shares in ``[0, 1]`` (NaN for a map without positive values).

    Examples:
        >>> mask = torch.zeros(1, 1, 2, 2); mask[..., 0, 0] = 1
        >>> mask_mass(torch.tensor([[[[3.0, 1.0], [-5.0, 0.0]]]]), mask)
        tensor([0.7500])
    """
    return _mask_mass_update(attributions, masks)
