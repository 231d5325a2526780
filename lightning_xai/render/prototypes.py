"""Pictures of a prototype head: its prototypes (patch, source image with box, similarity map) and
"this looks like that" explanations of an input. Pure tensor / PIL, no Lightning.

Inputs are CPU or device tensors; everything returned is float RGB in ``[0, 1]``. Similarity maps
are given on the head's patch grid and upsampled (bilinear) over the image by
:func:`~lightning_xai.render.images.overlay`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.render.images import _check_batch, annotated_grid, overlay, to_display

__all__ = ["crop_patches", "draw_boxes", "prototype_gallery", "this_looks_like_that"]

BOX_COLOR: tuple[float, float, float] = (1.0, 0.85, 0.0)
"""Colour of the patch boxes (yellow)."""


def _check_boxes(boxes: object, n: int) -> Tensor:
    if not isinstance(boxes, Tensor):
        raise TypeError(f"Expected `boxes` to be a tensor, but got {type(boxes).__name__}.")
    if boxes.shape != (n, 4):
        raise ValueError(
            f"Expected `boxes` of shape [{n}, 4] (top, left, bottom, right), but got {tuple(boxes.shape)}."
        )
    return boxes.detach().long().cpu()


def draw_boxes(images: Tensor, boxes: Tensor, color: Sequence[float] = BOX_COLOR, width: int = 1) -> Tensor:
    """Draw one rectangle outline per image.

    Args:
        images: ``[N, C, H, W]`` (displayed with :func:`~lightning_xai.render.images.to_display`
            unless already RGB in ``[0, 1]``).
        boxes: ``[N, 4]`` ``(top, left, bottom, right)`` pixels, bottom/right exclusive; clipped
            to the image.
        color: RGB in ``[0, 1]``.
        width: Line width in pixels.

    Returns:
        ``[N, 3, H, W]`` float RGB in ``[0, 1]``.

    Examples:
        >>> out = draw_boxes(torch.zeros(1, 3, 8, 8), torch.tensor([[2, 2, 6, 6]]))
        >>> out[0, :, 2, 2].tolist(), out[0, :, 4, 4].tolist()
        ([1.0, 0.8500000238418579, 0.0], [0.0, 0.0, 0.0])
    """
    images = _check_batch("images", images)
    n, _, h, w = images.shape
    boxes = _check_boxes(boxes, n)
    if not (images.shape[1] == 3 and images.min() >= 0 and images.max() <= 1):
        images = to_display(images)
    out = images.detach().float().cpu().clone()
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    top, left = boxes[:, 0].clamp(0, h - 1).view(n, 1, 1), boxes[:, 1].clamp(0, w - 1).view(n, 1, 1)
    bottom, right = boxes[:, 2].clamp(1, h).view(n, 1, 1), boxes[:, 3].clamp(1, w).view(n, 1, 1)
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    core = (rows >= top + width) & (rows < bottom - width) & (cols >= left + width) & (cols < right - width)
    edge = (inside & ~core).unsqueeze(1)
    fill = torch.tensor([float(c) for c in color]).view(1, 3, 1, 1)
    return torch.where(edge, fill, out)


def crop_patches(images: Tensor, boxes: Tensor, size: Optional[tuple[int, int]] = None) -> Tensor:
    """Cut each image's box out and resize it (nearest) to ``size`` (default: the image size).

    Args:
        images: ``[N, C, H, W]``.
        boxes: ``[N, 4]`` ``(top, left, bottom, right)``.
        size: ``(h, w)`` of the returned patches.

    Returns:
        ``[N, 3, h, w]`` float RGB in ``[0, 1]``.

    Examples:
        >>> crop_patches(torch.rand(2, 3, 8, 8), torch.tensor([[0, 0, 4, 4], [2, 2, 8, 8]])).shape
        torch.Size([2, 3, 8, 8])
    """
    images = _check_batch("images", images)
    n, _, h, w = images.shape
    boxes = _check_boxes(boxes, n)
    size = size or (h, w)
    display = to_display(images).cpu()
    crops = []
    for image, (top, left, bottom, right) in zip(display, boxes.tolist()):
        top, left = min(max(top, 0), h - 1), min(max(left, 0), w - 1)
        bottom, right = max(min(bottom, h), top + 1), max(min(right, w), left + 1)
        crop = image[:, top:bottom, left:right].unsqueeze(0)
        crops.append(F.interpolate(crop, size=size, mode="nearest"))
    return torch.cat(crops)


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    maps = maps.detach().float().cpu()
    if maps.ndim == 3:
        maps = maps.unsqueeze(1)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def prototype_gallery(
    source_images: Tensor,
    boxes: Tensor,
    similarity_maps: Tensor,
    captions: Sequence[str],
    ncols: int = 2,
    title: Optional[str] = None,
    scale: Optional[int] = None,
) -> Tensor:
    """Every prototype as three tiles: its patch, its source image with the box, and its
    similarity map over the source image (with the box).

    Args:
        source_images: ``[P, C, H, W]`` the training image each prototype was pushed onto.
        boxes: ``[P, 4]`` the patch's pixel box in its source image.
        similarity_maps: ``[P, 1, h, w]`` (or ``[P, h, w]``) the prototype's similarity to every
            patch of its source image, on the patch grid.
        captions: One caption per prototype (shown under its patch), e.g. ``"proto 3\\nclass circle"``.
        ncols: Prototypes per row (each takes three tiles).
        title: Optional title.
        scale: Integer upscaling of the tiles (see :func:`~lightning_xai.render.images.annotated_grid`).

    Returns:
        ``[3, H', W']`` float RGB in ``[0, 1]``.

    Examples:
        >>> img = prototype_gallery(torch.rand(2, 3, 8, 8), torch.tensor([[0, 0, 4, 4], [4, 4, 8, 8]]),
        ...                         torch.rand(2, 1, 2, 2), ["proto 0", "proto 1"])
        >>> img.shape[0]
        3
    """
    source_images = _check_batch("source_images", source_images)
    p, _, h, w = source_images.shape
    boxes = _check_boxes(boxes, p)
    if len(captions) != p:
        raise ValueError(f"Expected {p} captions (one per prototype), but got {len(captions)}.")
    maps = _upsample(similarity_maps, (h, w))
    if maps.shape[0] != p:
        raise ValueError(f"Expected {p} similarity maps, but got {maps.shape[0]}.")
    images = source_images.detach().float().cpu()
    patches = crop_patches(images, boxes)
    sources = draw_boxes(to_display(images), boxes)
    heat = draw_boxes(overlay(images, maps, signed=False, alpha=0.55), boxes)
    tiles = torch.stack([patches, sources, heat], dim=1).flatten(0, 1)
    labels = [t for c in captions for t in (c, "source", "similarity")]
    return annotated_grid(tiles, labels, ncols=3 * ncols, title=title, scale=scale)


def this_looks_like_that(
    image: Tensor,
    similarity_maps: Tensor,
    prototype_sources: Tensor,
    prototype_boxes: Tensor,
    captions: Sequence[str],
    title: Optional[str] = None,
    scale: Optional[int] = None,
) -> Tensor:
    """ProtoPNet's explanation of one input: for each of its top-k prototypes, a row with the input
    under the prototype's upsampled similarity map (the part that "looks like" it), the
    prototype's patch, and the prototype's source image with its box.

    Args:
        image: ``[C, H, W]`` the explained input.
        similarity_maps: ``[k, 1, h, w]`` (or ``[k, h, w]``) each prototype's similarity to every
            patch of the input, on the patch grid.
        prototype_sources: ``[k, C, H_s, W_s]`` each prototype's source image.
        prototype_boxes: ``[k, 4]`` each prototype's box in its source image.
        captions: One caption per row, e.g. ``"proto 4 (circle)\\nsim 3.1 x w 1.0"``.
        title: Optional title (e.g. the true and predicted class).
        scale: Integer upscaling of the tiles.

    Returns:
        ``[3, H', W']`` float RGB in ``[0, 1]``.

    Examples:
        >>> out = this_looks_like_that(torch.rand(3, 8, 8), torch.rand(2, 1, 2, 2), torch.rand(2, 3, 8, 8),
        ...                            torch.tensor([[0, 0, 4, 4], [4, 4, 8, 8]]), ["a", "b"])
        >>> out.shape[0]
        3
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"Expected `image` of shape [C, H, W], but got {getattr(image, 'shape', image)!r}.")
    sources = _check_batch("prototype_sources", prototype_sources)
    k = sources.shape[0]
    boxes = _check_boxes(prototype_boxes, k)
    if len(captions) != k:
        raise ValueError(f"Expected {k} captions (one per prototype), but got {len(captions)}.")
    h, w = image.shape[-2:]
    maps = _upsample(similarity_maps, (h, w))
    if maps.shape[0] != k:
        raise ValueError(f"Expected {k} similarity maps, but got {maps.shape[0]}.")
    inputs = image.detach().float().cpu().unsqueeze(0).expand(k, -1, -1, -1)
    looks = overlay(inputs, maps, signed=False, alpha=0.55)
    sources = sources.detach().float().cpu()
    if sources.shape[-2:] != (h, w):
        scale_h, scale_w = h / sources.shape[-2], w / sources.shape[-1]
        boxes = (boxes.double() * torch.tensor([scale_h, scale_w, scale_h, scale_w])).round().long()
        sources = F.interpolate(sources, size=(h, w), mode="nearest")
    patches = crop_patches(sources, boxes, size=(h, w))
    boxed = draw_boxes(to_display(sources), boxes)
    tiles = torch.stack([looks, patches, boxed], dim=1).flatten(0, 1)
    labels = [t for c in captions for t in (c, "looks like", "its source")]
    return annotated_grid(tiles, labels, ncols=3, title=title, scale=scale, fontsize=8.0)
