"""Pure functions that summarise attribution maps: entropy, share inside a mask, stability.

Each public function has a ``_update`` half returning per-sample values (what the Metric class in
:mod:`lightning_xai.metrics.maps` accumulates) and reduces them to a mean.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["map_entropy", "mask_share", "map_ssim"]


def _check_maps(maps: Tensor, name: str = "maps") -> None:
    if maps.ndim != 4:
        raise ValueError(f"Expected `{name}` of shape [B, C, H, W], but got {tuple(maps.shape)}.")


def _as_distribution(maps: Tensor) -> Tensor:
    """|maps| summed over channels, flattened and normalised to sum 1 per sample ([B, HW])."""
    energy = maps.detach().abs().sum(dim=1).flatten(1).to(torch.float64)
    total = energy.sum(dim=1, keepdim=True)
    uniform = torch.full_like(energy, 1.0 / energy.shape[1])
    return torch.where(total > 0, energy / total.clamp_min(torch.finfo(energy.dtype).tiny), uniform)


def _map_entropy_update(maps: Tensor) -> Tensor:
    _check_maps(maps)
    p = _as_distribution(maps)
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(dim=1)
    return (ent / torch.log(torch.tensor(float(p.shape[1]), dtype=p.dtype))).to(maps.dtype)


def map_entropy(maps: Tensor) -> Tensor:
    """Mean normalised Shannon entropy of ``|maps|`` seen as a distribution over pixels.

    1.0 means the attribution is spread uniformly over the image; values near 0 mean it sits on a
    few pixels. An all-zero map counts as uniform.

    Args:
        maps: ``[B, C, H, W]`` attributions (channels are summed in absolute value).

    Returns:
        Scalar tensor in ``[0, 1]``.

    Examples:
        >>> map_entropy(torch.ones(2, 1, 4, 4))
        tensor(1.)
    """
    return _map_entropy_update(maps).mean()


def _mask_share_update(maps: Tensor, masks: Tensor) -> Tensor:
    _check_maps(maps)
    _check_maps(masks, "masks")
    if masks.shape[0] != maps.shape[0] or masks.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"Expected `masks` [B, 1, H, W] matching `maps` {tuple(maps.shape)}, but got {tuple(masks.shape)}."
        )
    p = _as_distribution(maps)
    inside = (masks.detach().amax(dim=1).flatten(1) > 0.5).to(p.dtype)
    return (p * inside).sum(dim=1).to(maps.dtype)


def mask_share(maps: Tensor, masks: Tensor) -> Tensor:
    """Mean share of the attribution energy ``|maps|`` that falls inside the ground-truth mask.

    Also known as the energy-based pointing game (Wang et al., Score-CAM). 1.0: all attribution
    on the object; the object's area fraction is what a uniform map scores.

    Args:
        maps: ``[B, C, H, W]`` attributions.
        masks: ``[B, 1, H, W]`` binary ground-truth masks (values > 0.5 are inside).

    Returns:
        Scalar tensor in ``[0, 1]``.
    """
    return _mask_share_update(maps, masks).mean()


def _map_ssim_update(maps: Tensor, reference: Tensor) -> Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_maps(maps)
    if maps.shape != reference.shape:
        raise ValueError(f"Expected maps of equal shape, but got {tuple(maps.shape)} and {tuple(reference.shape)}.")
    a = _normalise01(maps.detach().abs().sum(dim=1, keepdim=True))
    b = _normalise01(reference.detach().abs().sum(dim=1, keepdim=True))
    side = min(a.shape[-2:])
    if side >= 11:  # torchmetrics' default: an 11x11 Gaussian window, sigma 1.5
        options: dict = {"gaussian_kernel": True, "sigma": 1.5}
    else:  # smaller maps: the largest odd uniform window that fits
        options = {"gaussian_kernel": False, "kernel_size": max(1, side - (1 - side % 2))}
    return structural_similarity_index_measure(a.float(), b.float(), data_range=1.0, reduction="none", **options).to(
        maps.dtype
    )


def _normalise01(maps: Tensor) -> Tensor:
    flat = maps.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (maps - lo) / (hi - lo).clamp_min(1e-12)


def map_ssim(maps: Tensor, reference: Tensor) -> Tensor:
    """Mean structural similarity (torchmetrics SSIM) between two sets of maps.

    Both are reduced to ``|.|`` summed over channels and min-max scaled to ``[0, 1]`` per map
    first, so the score compares where attribution sits, not its scale (Arun et al. 2020).

    Args:
        maps: ``[B, C, H, W]`` attributions.
        reference: maps of the same shape (e.g. the previous epoch's).

    Returns:
        Scalar tensor in ``[-1, 1]``; 1.0 for identical maps.
    """
    return _map_ssim_update(maps, reference).mean()
