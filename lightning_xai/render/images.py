"""Turn attribution maps into images and figures: pure tensor / numpy / matplotlib / PIL, no Lightning.

Conventions: image batches are ``[B, C, H, W]``, maps ``[B, 1, H, W]``, and every function that
returns something to display returns float RGB in ``[0, 1]`` (``[B, 3, H, W]`` or ``[3, H, W]``).
Signed maps (positive and negative evidence) use a diverging colour map centred at zero
(:data:`DEFAULT_SIGNED_CMAP`: red positive, blue negative, white zero); unsigned maps use a
sequential one (:data:`DEFAULT_UNSIGNED_CMAP`), both matplotlib's. Captioned grids are composed
as arrays with the text drawn by PIL in matplotlib's DejaVu Sans: no figure, no ``pyplot``, nothing
global touched, and a few milliseconds a grid, so a callback can render every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEFAULT_SIGNED_CMAP",
    "DEFAULT_UNSIGNED_CMAP",
    "reduce_channels",
    "normalize_maps",
    "colormap_lut",
    "heatmap_to_rgb",
    "to_display",
    "overlay",
    "image_grid",
    "annotated_grid",
    "evolution_strip",
    "table_image",
    "COLORBAR_TEXT",
    "MIN_TILE_PX",
    "MIN_CELL_PX",
    "to_uint8_hwc",
    "save_png",
]

DEFAULT_SIGNED_CMAP = "bwr"
"""Diverging colour map for signed maps: blue negative, white zero, red positive."""
DEFAULT_UNSIGNED_CMAP = "inferno"
"""Sequential colour map for unsigned maps: black low, yellow high."""

_LUT_SIZE = 257  # odd, so that the middle entry is exactly 0.5 (zero of a signed map)
_EPS = 1e-12


def _check_batch(name: str, tensor: object, channels: int | None = None) -> Tensor:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"Expected `{name}` to be a tensor, but got {type(tensor).__name__}.")
    if tensor.ndim != 4 or (channels is not None and tensor.shape[1] != channels):
        expected = f"[B, {channels}, H, W]" if channels is not None else "[B, C, H, W]"
        raise ValueError(f"Expected `{name}` of shape {expected}, but got {tuple(tensor.shape)}.")
    return tensor


def reduce_channels(attr: Tensor, signed: bool) -> Tensor:
    """Collapse an input-shaped attribution ``[B, C, H, W]`` to one map per input ``[B, 1, H, W]``.

    Args:
        attr: Attribution with one value per input element.
        signed: Sum the channels (keeps the sign); otherwise sum their absolute values.

    Returns:
        ``[B, 1, H, W]`` float maps.

    Raises:
        TypeError: ``attr`` is not a tensor.
        ValueError: ``attr`` is not 4-D.

    Examples:
        >>> reduce_channels(torch.ones(2, 3, 4, 4), signed=True).shape
        torch.Size([2, 1, 4, 4])
    """
    attr = _check_batch("attr", attr).detach().float()
    return attr.sum(dim=1, keepdim=True) if signed else attr.abs().sum(dim=1, keepdim=True)


def normalize_maps(maps: Tensor, signed: bool, clip_percentile: float = 100.0) -> Tensor:
    """Scale each map for display.

    Signed maps are divided by their largest absolute value (into ``[-1, 1]``, zero stays zero);
    unsigned maps are min-max scaled into ``[0, 1]``. Constant or all-zero maps give zeros, and
    NaN/inf values are replaced (0, and the finite extremes) so the result is always finite.
    With ``clip_percentile < 100`` the top of the scale is that percentile of ``|value|`` (signed)
    or of the values (unsigned) and larger values saturate, so a few extreme pixels do not wash
    out the rest of a sparse map (captum's ``outlier_perc`` idea).

    Args:
        maps: ``[B, 1, H, W]`` maps (any channel count works; each map is scaled as a whole).
        signed: Whether the maps carry a sign.
        clip_percentile: Percentile in ``(0, 100]`` used as the top of the scale.

    Returns:
        Maps of the same shape, float, in ``[-1, 1]`` (signed) or ``[0, 1]`` (unsigned).

    Raises:
        TypeError: ``maps`` is not a tensor.
        ValueError: ``maps`` is not 4-D.

    Examples:
        >>> normalize_maps(torch.tensor([[[[-2.0, 1.0]]]]), signed=True).tolist()
        [[[[-1.0, 0.5]]]]
    """
    if not 0.0 < clip_percentile <= 100.0:
        raise ValueError(f"Expected argument `clip_percentile` in (0, 100], but got {clip_percentile}.")
    maps = _check_batch("maps", maps).detach().float()
    maps = torch.nan_to_num(maps, nan=0.0, posinf=torch.finfo(torch.float32).max, neginf=torch.finfo(torch.float32).min)
    flat = maps.flatten(1)

    def top(values: Tensor) -> Tensor:
        if clip_percentile >= 100.0:
            return values.amax(dim=1)
        return torch.quantile(values, clip_percentile / 100.0, dim=1)

    if signed:
        scale = top(flat.abs()).clamp_min(_EPS).view(-1, 1, 1, 1)
        return (maps / scale).clamp(-1.0, 1.0)
    low = flat.amin(dim=1).view(-1, 1, 1, 1)
    high = top(flat).view(-1, 1, 1, 1)
    span = high - low
    out = torch.where(span > _EPS, (maps - low) / span.clamp_min(_EPS), torch.zeros_like(maps))
    return torch.nan_to_num(out, nan=0.0).clamp(0.0, 1.0)


@lru_cache(maxsize=32)
def _lut(cmap: str) -> Tensor:
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"Unknown matplotlib colour map {cmap!r}.") from None
    return torch.from_numpy(np.asarray(colormap(np.linspace(0.0, 1.0, _LUT_SIZE))[:, :3], dtype=np.float32))


def colormap_lut(cmap: str) -> Tensor:
    """The ``[257, 3]`` RGB lookup table of a matplotlib colour map (entry 128 is the centre).

    Raises:
        ValueError: ``cmap`` is not a registered matplotlib colour map.
    """
    if not isinstance(cmap, str):
        raise TypeError(f"Expected `cmap` to be a str, but got {type(cmap).__name__}.")
    return _lut(cmap).clone()


def heatmap_to_rgb(maps: Tensor, signed: bool, cmap: str | None = None, normalize: bool = True) -> Tensor:
    """Colour maps with a matplotlib colour map, vectorised as a table lookup.

    Args:
        maps: ``[B, 1, H, W]`` maps.
        signed: Signed maps are read in ``[-1, 1]`` and coloured with a diverging map whose centre
            colour is zero; unsigned maps are read in ``[0, 1]``.
        cmap: A matplotlib colour map name; default :data:`DEFAULT_SIGNED_CMAP` or
            :data:`DEFAULT_UNSIGNED_CMAP`.
        normalize: Scale each map first with :func:`normalize_maps`. Pass ``False`` for maps
            already scaled (for example with a shared scale across epochs); values outside the
            range are clipped.

    Returns:
        ``[B, 3, H, W]`` float RGB in ``[0, 1]``.

    Raises:
        TypeError: ``maps`` is not a tensor.
        ValueError: ``maps`` is not ``[B, 1, H, W]`` or ``cmap`` is unknown.

    Examples:
        >>> rgb = heatmap_to_rgb(torch.randn(2, 1, 8, 8), signed=True)
        >>> rgb.shape, bool(rgb.min() >= 0 and rgb.max() <= 1)
        (torch.Size([2, 3, 8, 8]), True)
    """
    maps = _check_batch("maps", maps, channels=1)
    name = cmap if cmap is not None else (DEFAULT_SIGNED_CMAP if signed else DEFAULT_UNSIGNED_CMAP)
    lut = colormap_lut(name).to(maps.device)
    values = normalize_maps(maps, signed) if normalize else torch.nan_to_num(maps.detach().float())
    unit = (values + 1.0) / 2.0 if signed else values
    index = (unit.clamp(0.0, 1.0) * (_LUT_SIZE - 1)).round().long()  # [B, 1, H, W]
    return lut[index[:, 0]].permute(0, 3, 1, 2).contiguous()


def to_display(images: Tensor) -> Tensor:
    """Make an input batch displayable: per-image min-max into ``[0, 1]``, RGB.

    One channel becomes gray RGB, four channels drop the alpha, any other count is averaged to
    gray. A constant image keeps its value clipped to ``[0, 1]``.

    Args:
        images: ``[B, C, H, W]`` inputs (normalised or not).

    Returns:
        ``[B, 3, H, W]`` float in ``[0, 1]``.

    Raises:
        TypeError: ``images`` is not a tensor.
        ValueError: ``images`` is not 4-D.
    """
    images = _check_batch("images", images).detach().float()
    images = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
    channels = images.shape[1]
    if channels == 1:
        images = images.expand(-1, 3, -1, -1)
    elif channels == 4:
        images = images[:, :3]
    elif channels != 3:
        images = images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    flat = images.flatten(1)
    low = flat.amin(dim=1).view(-1, 1, 1, 1)
    high = flat.amax(dim=1).view(-1, 1, 1, 1)
    span = high - low
    scaled = (images - low) / span.clamp_min(_EPS)
    return torch.where(span > _EPS, scaled, images).clamp(0.0, 1.0).contiguous()


def overlay(
    images: Tensor,
    maps: Tensor,
    signed: bool,
    alpha: float = 0.5,
    cmap: str | None = None,
    grayscale: bool = True,
) -> Tensor:
    """Blend coloured maps over their images.

    Maps are resized (bilinear) to the image size when they differ. Unsigned maps are blended
    with a uniform ``alpha``; signed maps with ``alpha * |value|`` per pixel, so a zero
    attribution leaves the image as it is and only evidence is tinted (red for, blue against).
    The image is shown in gray by default so that the heatmap's colours cannot be confused
    with the image's own.

    Args:
        images: ``[B, C, H, W]`` inputs (displayed with :func:`to_display`).
        maps: ``[B, 1, h, w]`` maps.
        signed: Whether the maps carry a sign.
        alpha: Opacity of the heatmap, in ``[0, 1]``.
        cmap: Colour map name (see :func:`heatmap_to_rgb`).
        grayscale: Show the image in gray under the heatmap (``False``: in its colours).

    Returns:
        ``[B, 3, H, W]`` float RGB in ``[0, 1]``.

    Raises:
        TypeError: ``images`` or ``maps`` is not a tensor.
        ValueError: Bad shapes, batch sizes that differ, or ``alpha`` outside ``[0, 1]``.

    Examples:
        >>> overlay(torch.rand(2, 3, 32, 32), torch.rand(2, 1, 8, 8), signed=False).shape
        torch.Size([2, 3, 32, 32])
    """
    images = _check_batch("images", images)
    maps = _check_batch("maps", maps, channels=1)
    if images.shape[0] != maps.shape[0]:
        raise ValueError(f"Expected as many maps as images, but got {maps.shape[0]} maps for {images.shape[0]} images.")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected argument `alpha` to be a float in the [0, 1] range, but got {alpha!r}.")
    base = to_display(images)
    if grayscale:
        gray = (base * torch.tensor([0.299, 0.587, 0.114], device=base.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        base = gray.expand_as(base)
    maps = maps.detach().float().to(base.device)
    if maps.shape[-2:] != base.shape[-2:]:
        maps = F.interpolate(maps, size=base.shape[-2:], mode="bilinear", align_corners=False)
    values = normalize_maps(maps, signed)
    heat = heatmap_to_rgb(values, signed, cmap, normalize=False)
    weight = alpha * values.abs() if signed else torch.full_like(values, float(alpha))
    return ((1.0 - weight) * base + weight * heat).clamp(0.0, 1.0)


def image_grid(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> Tensor:
    """Tile ``[N, 3, H, W]`` images into one ``[3, H', W']`` image (``torchvision.utils.make_grid``).

    Args:
        images: ``[N, 3, H, W]`` images in ``[0, 1]``.
        nrow: Images per row.
        padding: Pixels between tiles.
        pad_value: Colour of the padding (white by default).

    Raises:
        TypeError: ``images`` is not a tensor.
        ValueError: ``images`` is not ``[N, 3, H, W]`` with ``N >= 1`` or ``nrow < 1``.
    """
    from torchvision.utils import make_grid

    images = _check_batch("images", images, channels=3)
    if images.shape[0] == 0:
        raise ValueError("Expected at least one image, but got an empty batch.")
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"Expected argument `nrow` to be a positive int, but got {nrow!r}.")
    return make_grid(images.detach().float().cpu(), nrow=nrow, padding=padding, pad_value=pad_value)


@lru_cache(maxsize=16)
def _font(size_px: int) -> object:
    """DejaVu Sans (shipped inside matplotlib, so always present) at ``size_px`` pixels."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size_px)


def _wrap(text: str, font: object, max_px: float) -> list[str]:
    """Greedy word wrap of ``text`` (its ``\\n`` kept) to lines at most ``max_px`` wide in ``font``;
    a word wider than the line is cut between characters."""
    measure = font.getlength  # type: ignore[attr-defined]
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if measure(candidate) <= max_px:
                line = candidate
                continue
            if line:
                lines.append(line)
            while measure(word) > max_px and len(word) > 1:
                cut = max(1, max(i for i in range(1, len(word) + 1) if measure(word[:i]) <= max_px or i == 1))
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


MIN_TILE_PX = 128
"""Tiles are upscaled (nearest, by an integer factor) until their longer side is at least this many pixels."""
MIN_CELL_PX = 112
"""A grid cell is at least this wide, so that a caption under a small tile stays readable."""


def _compose(
    tiles: Tensor,
    captions: Sequence[str],
    ncols: int,
    title: str | None,
    scale: int | None,
    fontsize: float,
    colorbar: str | None = None,
    cmap: str | None = None,
) -> Tensor:
    """Lay out ``tiles`` ``[N, 3, h, w]`` on a white canvas, each captioned below, with a title.

    Tiles are upscaled by an integer ``scale`` (nearest: pixel for pixel, colours exact) and
    pasted as arrays; only the text goes through PIL (with matplotlib's DejaVu Sans), which keeps
    this cheap enough to run every epoch for every probe image. Captions and the title are
    wrapped to their width, never clipped and never drawn over a neighbour.
    """
    from PIL import Image, ImageDraw

    n, _, h, w = tiles.shape
    if scale is None:
        scale = max(1, math.ceil(MIN_TILE_PX / max(h, w)))
    elif isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"Expected argument `scale` to be a positive int or None, but got {scale!r}.")
    tile_h, tile_w = h * scale, w * scale
    pad = 8
    font_px = max(6, round(fontsize * 100.0 / 72.0))
    font = _font(font_px)
    line_px = int(math.ceil(font_px * 1.3))
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    cell_w = max(tile_w, MIN_CELL_PX) + 2 * pad
    wrapped = ["\n".join(_wrap(c, font, cell_w - 4)) if c else "" for c in captions]
    lines = max((c.count("\n") + 1 if c else 0) for c in wrapped)
    caption_px = lines * line_px + (4 if lines else 0)
    title_font_px = round(1.2 * font_px)
    title_font = _font(title_font_px)
    width_px = cols * cell_w
    title_text = "\n".join(_wrap(title, title_font, width_px - 2 * pad)) if title else ""
    title_px = (title_text.count("\n") + 1) * int(math.ceil(title_font_px * 1.3)) + pad if title else 0
    bar = _colorbar_rows(colorbar, cmap, min(width_px - 2 * pad, 360), font) if colorbar else None
    bar_px = bar.shape[0] + pad if bar is not None else 0
    cell_h = tile_h + caption_px + pad
    height_px = rows * cell_h + title_px + pad + bar_px

    canvas = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
    array = (tiles.detach().float().cpu().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    if scale > 1:
        array = array.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    array_np = array.permute(0, 2, 3, 1).numpy()
    anchors = []
    for i in range(n):
        r, c = divmod(i, cols)
        left, top = c * cell_w + (cell_w - tile_w) // 2, title_px + pad + r * cell_h
        canvas[top : top + tile_h, left : left + tile_w] = array_np[i]
        anchors.append((c * cell_w + cell_w / 2, top + tile_h + 3))
    if bar is not None:
        top = title_px + pad + rows * cell_h
        left = (width_px - bar.shape[1]) // 2
        canvas[top : top + bar.shape[0], left : left + bar.shape[1]] = bar
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    if title:
        draw.multiline_text(
            (width_px / 2, pad / 2), title_text, fill=(0, 0, 0), font=title_font, anchor="ma", align="center"
        )
    for (x, y), caption in zip(anchors, wrapped):
        if caption:
            draw.multiline_text(
                (x, y), caption, fill=(0, 0, 0), font=font, anchor="ma", align="center", spacing=line_px - font_px
            )
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0


COLORBAR_TEXT = {
    "signed": ("-max", "0", "+max", "red: raises the class score, blue: lowers it (scale per map)"),
    "unsigned": ("0", "", "max", "attribution, low to high (scale per map)"),
}
"""The labels under a colour bar: left, centre and right ticks and the legend line, by kind."""


def _colorbar_rows(kind: str, cmap: str | None, width: int, font: object) -> np.ndarray:
    """A ``[h, width, 3]`` uint8 colour bar with its tick labels and legend, white background."""
    from PIL import Image, ImageDraw

    if kind not in COLORBAR_TEXT:
        raise ValueError(f"Expected argument `colorbar` to be one of 'signed', 'unsigned' or None, but got {kind!r}.")
    signed = kind == "signed"
    name = cmap if cmap is not None else (DEFAULT_SIGNED_CMAP if signed else DEFAULT_UNSIGNED_CMAP)
    lut = colormap_lut(name)
    ramp = lut[torch.linspace(0, _LUT_SIZE - 1, width).round().long()]  # [width, 3]
    bar_h = 12
    size_px = getattr(font, "size", 12)
    line_px = int(math.ceil(size_px * 1.3))
    left, centre, right, legend = COLORBAR_TEXT[kind]
    legend_lines = _wrap(legend, font, width)
    height = bar_h + 2 + line_px * (1 + len(legend_lines))
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    canvas[:bar_h] = (ramp * 255.0).round().to(torch.uint8).numpy()[None]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    y = bar_h + 2
    draw.text((0, y), left, fill=(0, 0, 0), font=font, anchor="la")
    if centre:
        draw.text((width / 2, y), centre, fill=(0, 0, 0), font=font, anchor="ma")
    draw.text((width, y), right, fill=(0, 0, 0), font=font, anchor="ra")
    draw.multiline_text(
        (width / 2, y + line_px), "\n".join(legend_lines), fill=(0, 0, 0), font=font, anchor="ma", align="center"
    )
    return np.asarray(image).copy()


def annotated_grid(
    images: Tensor,
    captions: Sequence[str],
    ncols: int = 4,
    title: str | None = None,
    scale: int | None = None,
    fontsize: float = 12.0,
    colorbar: str | None = None,
    cmap: str | None = None,
) -> Tensor:
    """A grid of images, each captioned below, as an RGB tensor.

    Tiles are upscaled with nearest-neighbour (by ``scale``; by default until a tile is at least
    :data:`MIN_TILE_PX` pixels wide) so that 28x28 inputs stay sharp, and every cell is at least
    :data:`MIN_CELL_PX` wide; captions such as ``"true: circle\\npred: square (0.93)"`` are
    wrapped to the cell's width, never clipped or drawn over a neighbour. Tiles are pasted pixel for pixel, never
    resampled; text is drawn with matplotlib's DejaVu Sans through PIL (a few milliseconds, so a
    callback can afford it every epoch).

    Args:
        images: ``[N, 3, H, W]`` images in ``[0, 1]``.
        captions: One caption per image (``\\n`` for several lines; ``""`` for none).
        ncols: Tiles per row.
        title: Optional title over the grid.
        scale: Integer upscaling factor of the tiles; ``None`` picks one.
        fontsize: Caption font size in points at 100 dpi (the title is 1.2x).
        colorbar: ``"signed"`` or ``"unsigned"`` draws the colour bar of the heatmaps under the
            grid, with its ticks and what the colours mean (:data:`COLORBAR_TEXT`); ``None``
            (default) draws none.
        cmap: The colour map of the bar (default: the signed or unsigned default).

    Returns:
        ``[3, H', W']`` float RGB in ``[0, 1]``.

    Raises:
        TypeError: ``images`` is not a tensor or a caption is not a str.
        ValueError: ``images`` is not ``[N, 3, H, W]`` with ``N >= 1``, the number of captions
            differs from ``N``, ``ncols``/``scale`` is not positive, or ``colorbar`` is unknown.

    Examples:
        >>> grid = annotated_grid(torch.rand(2, 3, 32, 32), ["true: circle\\npred: square (0.93)", "b"])
        >>> grid.shape[0]
        3
    """
    images = _check_batch("images", images, channels=3)
    n = images.shape[0]
    if n == 0:
        raise ValueError("Expected at least one image, but got an empty batch.")
    if isinstance(captions, str) or len(captions) != n:
        raise ValueError(f"Expected {n} captions (one per image), but got {captions!r}.")
    for caption in captions:
        if not isinstance(caption, str):
            raise TypeError(f"Expected every caption to be a str, but got {caption!r}.")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"Expected argument `ncols` to be a positive int, but got {ncols!r}.")
    return _compose(images, captions, ncols, title, scale, fontsize, colorbar, cmap)


def table_image(columns: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> Tensor:
    """A table drawn as one picture: a header row of column names, then one row per entry.

    Image cells (``[3, H, W]`` or ``[1, H, W]`` tensors in ``[0, 1]``) are upscaled (nearest, an
    integer factor) to at least :data:`MIN_TILE_PX`; other cells are drawn as text, wrapped to the
    column's width. For loggers without tables (TensorBoard), so the thumbnails keep their labels.

    Args:
        columns: The column names.
        rows: Rows of cells, each as long as ``columns``.
        title: Optional title over the table.

    Returns:
        ``[3, H', W']`` float RGB in ``[0, 1]``.

    Raises:
        ValueError: No columns, or a row whose length differs from the columns'.

    Examples:
        >>> table_image(["label", "map"], [["cat", torch.rand(3, 8, 8)], ["dog", torch.rand(3, 8, 8)]]).shape[0]
        3
    """
    from PIL import Image, ImageDraw

    if not columns:
        raise ValueError("Expected at least one column, but got none.")
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(f"Expected every row to have {len(columns)} cells, but row {i} has {len(row)}.")
    pad, font_px = 6, 17
    font, header_font = _font(font_px), _font(font_px)
    line_px = int(math.ceil(font_px * 1.3))

    def is_image(value: object) -> bool:
        return isinstance(value, Tensor) and value.ndim == 3 and value.shape[0] in (1, 3)

    images = [v for row in rows for v in row if is_image(v)]
    side = max((max(v.shape[-2:]) for v in images), default=0)
    scale = max(1, math.ceil(MIN_TILE_PX / side)) if side else 1
    tile = side * scale
    col_w = max(tile, MIN_CELL_PX) + 2 * pad
    width = col_w * len(columns)
    header = [_wrap(str(c), header_font, col_w - 2 * pad) for c in columns]
    header_h = max(len(h) for h in header) * line_px + 2 * pad
    bodies = [[None if is_image(v) else _wrap(str(v), font, col_w - 2 * pad) for v in row] for row in rows]
    row_h = [
        max([tile if is_image(v) else 0 for v in row] + [len(b or []) * line_px for b in body]) + 2 * pad
        for row, body in zip(rows, bodies)
    ]
    title_lines = _wrap(title, header_font, width - 2 * pad) if title else []
    title_h = len(title_lines) * line_px + pad if title else 0
    canvas = np.full((title_h + header_h + sum(row_h), width, 3), 255, dtype=np.uint8)
    canvas[title_h + header_h - 2 : title_h + header_h] = 0  # rule under the header
    top = title_h + header_h
    for row, height in zip(rows, row_h):
        for j, value in enumerate(row):
            if is_image(value):
                img = value.detach().float().cpu().clamp(0, 1).expand(3, -1, -1)
                h, w = img.shape[-2:]
                big = (img * 255).round().to(torch.uint8).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
                left = j * col_w + (col_w - w * scale) // 2
                canvas[top + pad : top + pad + h * scale, left : left + w * scale] = big.permute(1, 2, 0).numpy()
        top += height
        canvas[top - 1 : top] = 200  # a light rule between rows
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    if title:
        draw.multiline_text(
            (width / 2, pad / 2), "\n".join(title_lines), fill=(0, 0, 0), font=header_font, anchor="ma", align="center"
        )
    for j, lines in enumerate(header):
        draw.multiline_text(
            (j * col_w + col_w / 2, title_h + pad),
            "\n".join(lines),
            fill=(0, 0, 0),
            font=header_font,
            anchor="ma",
            align="center",
        )
    top = title_h + header_h
    for body, height in zip(bodies, row_h):
        for j, lines in enumerate(body):
            if lines is not None:
                draw.multiline_text(
                    (j * col_w + col_w / 2, top + pad),
                    "\n".join(lines),
                    fill=(0, 0, 0),
                    font=font,
                    anchor="ma",
                    align="center",
                )
        top += height
    return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255.0


def evolution_strip(
    frames: Sequence[Tensor],
    labels: Sequence[str],
    title: str | None = None,
    scale: int | None = None,
) -> Tensor:
    """One probe image's maps over time, side by side and labelled (e.g. ``"epoch 3"``).

    Frames of different sizes are resized (nearest) to the first frame's size.

    Args:
        frames: ``[3, H, W]`` images in ``[0, 1]``, oldest first.
        labels: One label per frame.
        title: Optional title over the strip.
        scale: Integer upscaling factor (see :func:`annotated_grid`).

    Returns:
        ``[3, H', W']`` float RGB in ``[0, 1]``.

    Raises:
        TypeError: A frame is not a tensor.
        ValueError: No frames, a frame not ``[3, H, W]``, or ``len(labels) != len(frames)``.
    """
    if len(frames) == 0:
        raise ValueError("Expected at least one frame, but got none.")
    if len(labels) != len(frames):
        raise ValueError(f"Expected one label per frame ({len(frames)}), but got {len(labels)} labels.")
    size = None
    batch = []
    for frame in frames:
        if not isinstance(frame, Tensor):
            raise TypeError(f"Expected every frame to be a tensor, but got {type(frame).__name__}.")
        if frame.ndim != 3 or frame.shape[0] != 3:
            raise ValueError(f"Expected every frame of shape [3, H, W], but got {tuple(frame.shape)}.")
        frame = frame.detach().float().cpu().unsqueeze(0)
        if size is None:
            size = frame.shape[-2:]
        elif frame.shape[-2:] != size:
            frame = F.interpolate(frame, size=size, mode="nearest")
        batch.append(frame)
    return annotated_grid(torch.cat(batch), list(labels), ncols=len(batch), title=title, scale=scale)


def to_uint8_hwc(image: Tensor) -> np.ndarray:
    """A ``[3, H, W]`` (or ``[1, H, W]``, ``[H, W]``) float image in ``[0, 1]`` as a ``[H, W, 3]``
    ``uint8`` numpy array.

    Raises:
        TypeError: ``image`` is not a tensor.
        ValueError: ``image`` has another shape.
    """
    if not isinstance(image, Tensor):
        raise TypeError(f"Expected `image` to be a tensor, but got {type(image).__name__}.")
    if image.ndim == 2:
        image = image.unsqueeze(0)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"Expected `image` of shape [3, H, W] (or [1, H, W]), but got {tuple(image.shape)}.")
    image = torch.nan_to_num(image.detach().float().cpu(), nan=0.0).clamp(0.0, 1.0)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a ``[3, H, W]`` float image in ``[0, 1]`` as a PNG, creating parent folders.

    Returns:
        The path written.

    Raises:
        TypeError: ``image`` is not a tensor.
        ValueError: ``image`` is not ``[3, H, W]`` / ``[1, H, W]`` / ``[H, W]``.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8_hwc(image)).save(path, format="PNG")
    return path
