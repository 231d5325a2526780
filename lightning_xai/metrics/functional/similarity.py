"""Similarity between two sets of maps: Spearman rank, Pearson, SSIM and HOG (Adebayo et al. 2018).

The scores the sanity checks (:mod:`~lightning_xai.metrics.functional.randomization`) use to
compare the maps of a trained model with those of a randomised one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_xai.metrics.functional._common import check_batch, check_finite

__all__ = ["map_similarity", "MEASURES"]

MEASURES = ("spearman", "pearson", "ssim", "hog")
"""The ``measure`` names :func:`map_similarity` accepts."""


def check_measure(measure: object) -> str:
    """``measure`` if it is one of :data:`MEASURES`."""
    if measure not in MEASURES:
        raise ValueError(f"Expected argument `measure` to be one of {MEASURES}, but got {measure!r}.")
    return measure  # type: ignore[return-value]


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def _hog(maps: Tensor) -> Tensor:
    """HOG descriptors (scikit-image) of ``|map|`` summed over channels, min-max scaled ([B, D])."""
    import numpy as np

    try:
        from skimage.feature import hog
    except ImportError as err:  # pragma: no cover - scikit-image is a runtime dependency
        raise ImportError("HOG similarity needs scikit-image: pip install scikit-image") from err
    from lightning_xai.metrics.functional.maps import _normalise01

    m = _normalise01(maps.detach().abs().sum(dim=1, keepdim=True).to(torch.float64)).squeeze(1).cpu().numpy()
    side = max(2, min(m.shape[-2:]) // 4)
    feats = [hog(img, orientations=9, pixels_per_cell=(side, side), cells_per_block=(2, 2)) for img in m]
    return torch.as_tensor(np.stack(feats), device=maps.device)


def _map_similarity_update(maps: Tensor, reference: Tensor, measure: str = "spearman") -> Tensor:
    method = "map_similarity"
    check_measure(measure)
    maps = check_batch("maps", maps, method=method)
    reference = check_batch("reference", reference, method=method)
    if maps.shape != reference.shape:
        raise ValueError(
            f"{method}: expected maps of equal shape, but got {tuple(maps.shape)} and {tuple(reference.shape)}."
        )
    check_finite("maps", maps, method=method)
    check_finite("reference", reference, method=method)
    if measure == "ssim":
        from lightning_xai.metrics.functional.maps import _map_ssim_update

        return _map_ssim_update(maps, reference)
    if measure == "hog":
        return _pearson_rows(_hog(maps), _hog(reference.to(maps.device))).to(maps.dtype)
    a = maps.detach().flatten(1).to(torch.float64)
    b = reference.detach().to(maps.device).flatten(1).to(torch.float64)
    if measure == "pearson":
        return _pearson_rows(a, b).to(maps.dtype)
    from torchmetrics.functional import spearman_corrcoef

    return spearman_corrcoef(a.T.contiguous(), b.T.contiguous()).reshape(-1).to(maps.dtype)


def map_similarity(maps: Tensor, reference: Tensor, measure: str = "spearman") -> Tensor:
    """Per-sample similarity of two sets of maps.

    * ``"spearman"``: Spearman rank correlation of the flattened maps (torchmetrics, ties share
      their average rank), as quantus ``MPRT``'s default.
    * ``"pearson"``: Pearson correlation of the flattened maps.
    * ``"ssim"``: SSIM (torchmetrics) of ``|map|`` summed over channels and min-max scaled,
      as :func:`~lightning_xai.metrics.functional.map_ssim`.
    * ``"hog"``: Pearson correlation of the scikit-image HOG descriptors of those scaled maps
      (``skimage.feature.hog`` with 9 orientations, cells of ``max(2, min(H, W) // 4)`` pixels,
      2x2-cell blocks, L2-Hys block normalisation; CPU, one ``hog`` call per map). The tests
      recompute it with scikit-image and numpy (agreement 2e-8).

    Args:
        maps: ``[B, C, H, W]`` maps.
        reference: Maps of the same shape.
        measure: One of :data:`MEASURES`.

    Returns:
        ``[B]`` similarities in ``[-1, 1]``, 1 for identical maps (NaN for a constant map with
        the correlations).

    Raises:
        ValueError: Shapes differ, or an unknown ``measure``.
        LightningXAIError: A map holds NaN or infinity.

    Examples:
        >>> a = torch.rand(2, 1, 8, 8)
        >>> torch.allclose(map_similarity(a, 2 * a + 1, "spearman"), torch.ones(2))
        True
    """
    return _map_similarity_update(maps, reference, measure)
