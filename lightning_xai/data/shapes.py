"""A generated image dataset with exact ground truth: one shape per image, its pixel mask, and an
optional spurious marker (a "Clever Hans" shortcut).

The class of an image is the *kind* of shape it shows (square, circle, triangle, ...), drawn at a
random position, size and colour over a cluttered, noisy background. Because the shape's pixel
mask is known exactly, localisation metrics (pointing game, energy inside the mask) are exact.
With ``shortcut=True`` a small coloured patch is painted in a class-specific corner of a fraction
of the images: a model can learn the patch instead of the shape, and an explanation shows it.

Everything is generated at construction, vectorised over the whole dataset (no Python loop over
images or pixels), from one seeded :class:`torch.Generator`, so a seed always gives the same data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from lightning_xai._validation import check_float, check_int

__all__ = ["SHAPE_NAMES", "MARKER_COLORS", "ShapesDataset"]

SHAPE_NAMES: tuple[str, ...] = ("square", "circle", "triangle", "cross", "diamond", "ring")
"""The shape kinds, in class-index order; ``ShapesDataset(num_classes=k)`` uses the first ``k``."""

MARKER_COLORS: tuple[tuple[float, float, float], ...] = (
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.4, 1.0),
    (1.0, 1.0, 0.0),
    (1.0, 0.0, 1.0),
    (0.0, 1.0, 1.0),
)
"""The shortcut marker's colour for each class (its corner is ``class % 4``: top-left, top-right,
bottom-left, bottom-right)."""

_MIN_IMAGE_SIZE = 16


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """Vectorised HSV -> RGB for ``[N]`` tensors in [0, 1]; returns ``[N, 3]``."""
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h * 6.0, 6.0)
        channels.append(v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=1)


def _shape_masks(kind: str, dx: Tensor, dy: Tensor, r: Tensor) -> Tensor:
    """Boolean masks of one shape kind, from pixel offsets ``dx, dy`` ``[n, S, S]`` to the shape's
    centre and half-extents ``r`` ``[n, 1, 1]``."""
    if kind == "square":
        return torch.maximum(dx.abs(), dy.abs()) <= r
    if kind == "circle":
        return dx.square() + dy.square() <= r.square()
    if kind == "triangle":  # apex up, base at the bottom, as wide as it is tall
        return (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2.0)
    if kind == "cross":
        arm = r / 3.0
        return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    if kind == "diamond":
        return dx.abs() + dy.abs() <= r
    if kind == "ring":
        d2 = dx.square() + dy.square()
        return (d2 <= r.square()) & (d2 >= (0.5 * r).square())
    raise ValueError(f"Unknown shape kind {kind!r}; expected one of {SHAPE_NAMES}.")  # pragma: no cover


class ShapesDataset(Dataset[tuple[Tensor, Tensor, Tensor]]):
    """Synthetic RGB images of one shape each, with the shape's pixel mask as ground truth.

    Each image is ``[3, S, S]`` float in ``[0, 1]``: a smooth random colour field with speckle
    clutter and Gaussian noise, and one shape whose kind is the label. Labels are balanced
    (``num_samples // num_classes`` of each, the remainder spread over the first classes).
    Shapes stay clear of the corners, so a shortcut marker never covers them.

    With ``shortcut=True`` a ``shortcut_strength`` fraction of the images gets a small patch of the
    class's :data:`MARKER_COLORS` colour in the class's corner (``label % 4``: top-left,
    top-right, bottom-left, bottom-right). The marker is not part of :attr:`masks`; its pixels
    are in :attr:`marker_masks`. The random draws do not depend on ``shortcut``: the same seed
    with and without the shortcut gives identical images except for the marker pixels.

    Args:
        num_samples: Number of images.
        image_size: Side ``S`` of the square images, at least 16.
        num_classes: Number of shape kinds (2 to ``len(SHAPE_NAMES)``), see :data:`SHAPE_NAMES`.
        shortcut: Paint the label-correlated marker.
        shortcut_strength: Fraction (in expectation) of the images that get the marker.
        noise: Standard deviation of the additive Gaussian pixel noise.
        seed: Seed of the generator; the same arguments always give the same data.

    Attributes:
        classes: The shape names, index = label.
        images: ``[N, 3, S, S]`` float32 in ``[0, 1]``.
        labels: ``[N]`` int64.
        masks: ``[N, 1, S, S]`` float32 in ``{0, 1}``, the shape's pixels.
        has_marker: ``[N]`` bool, which images carry the shortcut marker.
        marker_masks: ``[N, 1, S, S]`` float32 in ``{0, 1}``, the marker's pixels (all zero
            without the shortcut).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range.

    Examples:
        >>> ds = ShapesDataset(num_samples=8, image_size=32, shortcut=True)
        >>> image, label, mask = ds[0]
        >>> image.shape, mask.shape, ds.classes[int(label)] in SHAPE_NAMES
        (torch.Size([3, 32, 32]), torch.Size([1, 32, 32]), True)
    """

    def __init__(
        self,
        num_samples: int = 512,
        image_size: int = 32,
        num_classes: int = 4,
        shortcut: bool = False,
        shortcut_strength: float = 1.0,
        noise: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.image_size = check_int("image_size", image_size, _MIN_IMAGE_SIZE)
        self.num_classes = check_int("num_classes", num_classes, 2, len(SHAPE_NAMES))
        if not isinstance(shortcut, bool):
            raise TypeError(f"Expected argument `shortcut` to be a bool, but got {shortcut!r}.")
        self.shortcut = shortcut
        self.shortcut_strength = check_float("shortcut_strength", shortcut_strength, 0.0, 1.0)
        self.noise = check_float("noise", noise, 0.0)
        self.seed = check_int("seed", seed, 0)
        self.classes: list[str] = list(SHAPE_NAMES[: self.num_classes])
        self.images: Tensor
        self.labels: Tensor
        self.masks: Tensor
        self.has_marker: Tensor
        self.marker_masks: Tensor
        self._generate()

    @property
    def marker_size(self) -> int:
        """Side in pixels of the square shortcut marker."""
        return max(2, round(self.image_size / 10))

    def _generate(self) -> None:
        n, s, k = self.num_samples, self.image_size, self.num_classes
        gen = torch.Generator().manual_seed(self.seed)

        # Every draw below happens whatever the options, in a fixed order (see the class docs).
        labels = torch.arange(n)[torch.randperm(n, generator=gen)] % k

        # geometry: half-extent r, and a centre that keeps the shape inside the image and clear of
        # the four corner squares where a marker may go: the first of a few candidate centres
        # that fits, or the image centre (which always fits)
        m = self.marker_size
        corner = m + 2.0
        r = s * (0.15 + 0.13 * torch.rand(n, generator=gen))
        r = torch.minimum(r, torch.tensor((s - 1) / 2.0 - corner))
        tries = 8
        low = (r + 1.0).view(n, 1)
        high = (s - 2.0 - r).view(n, 1)
        cx_try = low + (high - low) * torch.rand(n, tries, generator=gen)
        cy_try = low + (high - low) * torch.rand(n, tries, generator=gen)
        rt = r.view(n, 1)
        near_left, near_right = cx_try - rt < corner, cx_try + rt > s - 1 - corner
        near_top, near_bottom = cy_try - rt < corner, cy_try + rt > s - 1 - corner
        fits = ~((near_left | near_right) & (near_top | near_bottom))
        first = torch.where(fits.any(dim=1), fits.to(torch.int8).argmax(dim=1), -1)
        centre = torch.full((n,), (s - 1) / 2.0)
        pick = first.clamp(min=0).view(n, 1)
        cx = torch.where(first >= 0, cx_try.gather(1, pick).view(n), centre)
        cy = torch.where(first >= 0, cy_try.gather(1, pick).view(n), centre)

        # colours: a bright saturated shape over a darker background field
        shape_rgb = _hsv_to_rgb(
            torch.rand(n, generator=gen),
            0.55 + 0.45 * torch.rand(n, generator=gen),
            0.75 + 0.25 * torch.rand(n, generator=gen),
        )
        coarse = 0.05 + 0.4 * torch.rand(n, 3, 4, 4, generator=gen)
        background = F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
        speckle = torch.rand(n, 1, s, s, generator=gen) < 0.03
        speckle_value = 0.5 * torch.rand(n, 3, s, s, generator=gen)
        noise = torch.randn(n, 3, s, s, generator=gen) * self.noise
        marked = torch.rand(n, generator=gen) < self.shortcut_strength

        # shape masks, one vectorised pass per shape kind
        coords = torch.arange(s, dtype=torch.float32)
        dx = coords.view(1, 1, s) - cx.view(n, 1, 1)
        dy = coords.view(1, s, 1) - cy.view(n, 1, 1)
        rr = r.view(n, 1, 1)
        masks = torch.zeros(n, s, s, dtype=torch.bool)
        for label, kind in enumerate(self.classes):
            idx = labels == label
            masks[idx] = _shape_masks(kind, dx[idx], dy[idx], rr[idx])
        masks = masks.unsqueeze(1)

        images = torch.where(speckle, speckle_value, background)
        images = torch.where(masks, shape_rgb.view(n, 3, 1, 1), images)

        # the shortcut marker: a class-coloured patch in a class-specific corner
        has_marker = marked & self.shortcut
        marker_masks = torch.zeros(n, 1, s, s, dtype=torch.bool)
        if self.shortcut:
            where = labels % 4
            top = torch.where(where < 2, 1, s - 1 - m).view(n, 1, 1)
            left = torch.where(where % 2 == 0, 1, s - 1 - m).view(n, 1, 1)
            rows = torch.arange(s).view(1, s, 1)
            cols = torch.arange(s).view(1, 1, s)
            inside = (rows >= top) & (rows < top + m) & (cols >= left) & (cols < left + m)
            marker_masks = (inside & has_marker.view(n, 1, 1)).unsqueeze(1)
            palette = torch.tensor(MARKER_COLORS, dtype=torch.float32)
            marker_rgb = palette[labels % len(MARKER_COLORS)].view(n, 3, 1, 1)
            images = torch.where(marker_masks, marker_rgb, images)

        self.images = (images + noise).clamp_(0.0, 1.0).contiguous()
        self.labels = labels.to(torch.long)
        self.masks = masks.to(torch.float32)
        self.has_marker = has_marker
        self.marker_masks = marker_masks.to(torch.float32)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """The ``(image [3, S, S], label [], mask [1, S, S])`` triple at ``index``."""
        return self.images[index], self.labels[index], self.masks[index]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_samples={self.num_samples}, image_size={self.image_size}, "
            f"num_classes={self.num_classes}, shortcut={self.shortcut}, "
            f"shortcut_strength={self.shortcut_strength}, noise={self.noise}, seed={self.seed})"
        )
