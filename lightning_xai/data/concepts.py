"""Concept sets for :class:`~lightning_xai.data.ShapesDataset`, with pixel masks.

A concept set is a batch of images that show one concept, with the concept's pixels as a mask:

* each **shape** (``"square"``, ``"circle"``, ...): images of that shape in random colours;
* each **colour** of :data:`CONCEPT_COLORS` (``"red"``, ``"green"``, ``"blue"``, ``"yellow"``):
  random shapes painted in that colour;
* each class's **corner marker** (``"marker_<shape>"``): the shortcut marker of that class (its
  colour in its corner, as :class:`~lightning_xai.data.ShapesDataset` paints it with
  ``shortcut=True``) on images of random shapes, so the marker is the only thing they share.

:func:`random_images` gives images of random shapes without a marker (TCAV's random
counter-examples), and :func:`dissection_masks` the per-concept masks of a whole dataset (shapes
and marker) for :class:`~lightning_xai.concepts.NetworkDissection`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_xai._validation import check_float, check_int
from lightning_xai.data.shapes import MARKER_COLORS, SHAPE_NAMES, ShapesDataset

__all__ = ["CONCEPT_COLORS", "ConceptSet", "concept_sets", "random_images", "dissection_masks", "marker_box"]

CONCEPT_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 0.9, 0.1),
    "blue": (0.1, 0.3, 1.0),
    "yellow": (1.0, 0.9, 0.1),
}
"""The colour concepts and their RGB values."""


@dataclass(eq=False)
class ConceptSet:
    """Images showing one concept, with the concept's pixels.

    Attributes:
        name: The concept's name.
        images: ``[N, 3, S, S]`` float in ``[0, 1]``.
        masks: ``[N, 1, S, S]`` float in ``{0, 1}``.
    """

    name: str
    images: Tensor
    masks: Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])


def marker_box(label: int, image_size: int, marker_size: int) -> tuple[int, int]:
    """``(top, left)`` of class ``label``'s marker, as :class:`ShapesDataset` places it (corner
    ``label % 4``: top-left, top-right, bottom-left, bottom-right, one pixel from the edges)."""
    corner = label % 4
    top = 1 if corner < 2 else image_size - 1 - marker_size
    left = 1 if corner % 2 == 0 else image_size - 1 - marker_size
    return top, left


def _base(n: int, image_size: int, num_classes: int, noise: float, seed: int) -> ShapesDataset:
    return ShapesDataset(num_samples=n, image_size=image_size, num_classes=num_classes, noise=noise, seed=seed)


def random_images(
    num_samples: int = 500, image_size: int = 32, num_classes: int = 4, noise: float = 0.05, seed: int = 1
) -> Tensor:
    """Images of random shapes without the marker: random counter-examples for TCAV.

    Examples:
        >>> random_images(8, image_size=16).shape
        torch.Size([8, 3, 16, 16])
    """
    return _base(num_samples, image_size, num_classes, noise, seed).images


def concept_sets(
    num_per_concept: int = 50,
    image_size: int = 32,
    num_classes: int = 4,
    concepts: Sequence[str] | None = None,
    noise: float = 0.05,
    seed: int = 100,
) -> dict[str, ConceptSet]:
    """Concept sets with masks for the shapes data (see the module docs for the concepts).

    Args:
        num_per_concept: Images per concept.
        image_size: Side of the images (as the dataset's ``image_size``).
        num_classes: The dataset's ``num_classes`` (which shapes and markers exist).
        concepts: The names to build (default: every shape, colour and marker).
        noise: Pixel noise, as the dataset's.
        seed: Seed; the same arguments give the same sets.

    Returns:
        ``{name: ConceptSet}`` in the order of ``concepts``.

    Raises:
        ValueError: an unknown concept name (the message lists the known ones).

    Examples:
        >>> sets = concept_sets(6, image_size=16, num_classes=3, concepts=["circle", "red", "marker_square"])
        >>> {k: tuple(v.images.shape) for k, v in sets.items()}
        {'circle': (6, 3, 16, 16), 'red': (6, 3, 16, 16), 'marker_square': (6, 3, 16, 16)}
    """
    n = check_int("num_per_concept", num_per_concept, 1)
    image_size = check_int("image_size", image_size, 16)
    num_classes = check_int("num_classes", num_classes, 2, len(SHAPE_NAMES))
    noise = check_float("noise", noise, 0.0)
    seed = check_int("seed", seed, 0)
    shapes = list(SHAPE_NAMES[:num_classes])
    known = shapes + list(CONCEPT_COLORS) + [f"marker_{s}" for s in shapes]
    names = known if concepts is None else list(concepts)
    for name in names:
        if name not in known:
            raise ValueError(f"Unknown concept {name!r}; the shapes data has concepts {known}.")
    out: dict[str, ConceptSet] = {}
    for i, name in enumerate(names):
        set_seed = seed + 1000 * (known.index(name) + 1)
        if name in shapes:
            label = shapes.index(name)
            ds = _base(n * num_classes, image_size, num_classes, noise, set_seed)
            pick = (ds.labels == label).nonzero().flatten()[:n]
            out[name] = ConceptSet(name, ds.images[pick].clone(), ds.masks[pick].clone())
        elif name in CONCEPT_COLORS:
            ds = _base(n, image_size, num_classes, noise, set_seed)
            colour = torch.tensor(CONCEPT_COLORS[name]).view(1, 3, 1, 1)
            gen = torch.Generator().manual_seed(set_seed)
            jitter = torch.randn(n, 3, image_size, image_size, generator=gen) * noise
            images = torch.where(ds.masks.bool(), (colour + jitter).clamp(0.0, 1.0), ds.images)
            out[name] = ConceptSet(name, images, ds.masks.clone())
        else:
            label = shapes.index(name[len("marker_") :])
            ds = _base(n, image_size, num_classes, noise, set_seed)
            m = ds.marker_size
            top, left = marker_box(label, image_size, m)
            masks = torch.zeros(n, 1, image_size, image_size)
            masks[:, :, top : top + m, left : left + m] = 1.0
            colour = torch.tensor(MARKER_COLORS[label % len(MARKER_COLORS)]).view(1, 3, 1, 1)
            images = torch.where(masks.bool(), colour, ds.images)
            out[name] = ConceptSet(name, images, masks)
        del i
    return out


def dissection_masks(dataset: ShapesDataset, include_marker: bool = True) -> dict[str, Tensor]:
    """Per-concept masks ``[N, 1, S, S]`` of a whole dataset: each shape (its mask where the image
    shows that shape, empty elsewhere) and, with ``include_marker``, the marker's pixels.

    Examples:
        >>> ds = ShapesDataset(8, image_size=16, num_classes=2, shortcut=True)
        >>> sorted(dissection_masks(ds))
        ['circle', 'marker', 'square']
    """
    if not isinstance(dataset, ShapesDataset):
        raise TypeError(f"Expected a ShapesDataset, but got {type(dataset).__name__}.")
    out = {}
    for label, name in enumerate(dataset.classes):
        out[name] = dataset.masks * (dataset.labels == label).float().view(-1, 1, 1, 1)
    if include_marker:
        out["marker"] = dataset.marker_masks.clone()
    return out
