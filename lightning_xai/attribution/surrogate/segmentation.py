"""Superpixel segmentation: scikit-image's SLIC, quickshift and Felzenszwalb by name, a regular
grid, or any callable; the interpretable features of the surrogate explainers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from lightning_xai._validation import check_int

__all__ = [
    "SEGMENTATIONS",
    "superpixels",
]


SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb", "grid")
"""The segmentations :func:`superpixels` knows by name: three from scikit-image, and a regular
grid of square cells (no scikit-image; for noise-like inputs, where the others return one
segment)."""


SegmentationType = Union[str, Callable[[Tensor], Tensor]]


def _skimage_segmentation() -> Any:
    try:
        import skimage.segmentation as segmentation
    except ImportError as err:  # pragma: no cover - scikit-image is a dependency
        raise ImportError(
            "Superpixels need scikit-image: pip install scikit-image (or `pip install lightning-xai`)."
        ) from err
    return segmentation


def _check_segmentation(segmentation: Any) -> None:
    if isinstance(segmentation, str):
        if segmentation not in SEGMENTATIONS:
            raise ValueError(
                f"Expected argument `segmentation` to be one of {list(SEGMENTATIONS)} or a callable, but got "
                f"{segmentation!r}."
            )
    elif not callable(segmentation):
        raise TypeError(
            f"Expected argument `segmentation` to be a name or a callable, but got {type(segmentation).__name__}."
        )


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def superpixels(images: Tensor, method: str = "slic", **kwargs: Any) -> Tensor:
    """Superpixels of each image with scikit-image, labels ``0 .. K_i - 1``.

    Each image is min-max scaled to ``[0, 1]`` for the segmentation only. Defaults (overridden
    by ``kwargs``): ``slic``: ``n_segments=50, compactness=10``; ``quickshift``: LIME's
    ``kernel_size=4, max_dist=200, ratio=0.2`` (grey images repeated to RGB);
    ``felzenszwalb``: ``scale=100, sigma=0.5, min_size=20``; ``grid``: ``cell_size=8`` (square
    cells, row-major labels). On noise images scikit-image's methods may return a single segment.

    Args:
        images: ``[B, C, H, W]`` images (1 or 3 channels for quickshift).
        method: One of :data:`SEGMENTATIONS`.
        **kwargs: Passed to the scikit-image function.

    Returns:
        ``[B, H, W]`` int64 labels on the images' device.

    Raises:
        ValueError: unknown ``method`` or images not ``[B, C, H, W]``.

    Examples:
        >>> superpixels(torch.rand(2, 3, 16, 16), "slic", n_segments=8).shape
        torch.Size([2, 16, 16])
    """
    _check_segmentation(method)
    if images.ndim != 4:
        raise ValueError(f"Superpixels need images [B, C, H, W], but got shape {tuple(images.shape)}.")
    if method == "grid":
        cell = check_int("cell_size", kwargs.get("cell_size", 8), 1)
        height, width = images.shape[-2:]
        rows = torch.arange(height, device=images.device) // cell
        cols = torch.arange(width, device=images.device) // cell
        labels = rows[:, None] * math.ceil(width / cell) + cols[None, :]
        return labels.expand(images.shape[0], -1, -1).clone()
    segmentation = _skimage_segmentation()
    x = images.detach().to("cpu", torch.float64)
    low = x.flatten(1).amin(1).view(-1, 1, 1, 1)
    high = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    x = ((x - low) / (high - low).clamp(min=1e-12)).permute(0, 2, 3, 1).numpy()
    grey = x.shape[-1] == 1
    out = []
    for image in x:
        if method == "slic":
            args = {"n_segments": 50, "compactness": 10.0, "start_label": 0, **kwargs}
            labels = segmentation.slic(image[..., 0] if grey else image, channel_axis=None if grey else -1, **args)
        elif method == "quickshift":
            args = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, "rng": 0, **kwargs}
            rgb = np.repeat(image, 3, axis=-1) if grey else image
            labels = segmentation.quickshift(rgb, channel_axis=-1, **args)
        else:
            args = {"scale": 100.0, "sigma": 0.5, "min_size": 20, **kwargs}
            labels = segmentation.felzenszwalb(
                image[..., 0] if grey else image, channel_axis=None if grey else -1, **args
            )
        out.append(_relabel(np.asarray(labels)))
    return torch.as_tensor(np.stack(out), dtype=torch.long, device=images.device)


def _check_segments(segments: Tensor, inputs: Tensor) -> Tensor:
    if not isinstance(segments, Tensor):
        raise TypeError(f"Expected `segments` to be a Tensor, but got {type(segments).__name__}.")
    segments = segments.to(inputs.device)
    if segments.ndim == 4 and segments.shape[1] == 1:
        segments = segments[:, 0]
    if segments.shape != (inputs.shape[0], *inputs.shape[-2:]):
        raise ValueError(
            f"Expected `segments` of shape {(inputs.shape[0], *inputs.shape[-2:])}, but got {tuple(segments.shape)}."
        )
    if segments.is_floating_point() or int(segments.min()) < 0:
        raise ValueError("Expected `segments` to hold non-negative integer labels.")
    return segments.long()
