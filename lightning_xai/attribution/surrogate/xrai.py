"""XRAI (Kapishnikov, Bolukbasi, Viégas & Terry 2019): region attribution by greedy growth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, OutputType, TargetType
from lightning_xai.attribution.path import IntegratedGradients
from lightning_xai.attribution.surrogate.segmentation import superpixels

__all__ = [
    "XRAI",
]


# XRAI
class XRAI(Explainer):
    """XRAI (Kapishnikov, Bolukbasi, Viégas & Terry 2019): region attribution by greedy growth.

    1. Pixel attributions: :class:`IntegratedGradients` from a black (``0``) and a white
       (``1``) baseline, averaged (``baselines``), summed over channels.
    2. Over-segmentation: Felzenszwalb at every scale in ``scales`` (``sigma``, ``min_size``),
       each segment dilated by ``dilation`` pixels (a disk), segments from every scale pooled.
    3. Greedy growth: starting from nothing, repeatedly add the segment whose *new* pixels have
       the highest mean attribution (gain density); its new pixels get that gain as their
       value. Segments adding fewer than ``min_pixel_diff`` new pixels are dropped. Growth stops
       when ``area_threshold`` of the image is covered or no segment is left; uncovered pixels
       get the mean attribution of the uncovered area.

    The map (input-shaped, the same in every channel; signed, as gains can be negative) ranks
    regions: thresholding it at any level gives the XRAI region of that area. The
    defaults scale the paper's 299x299 settings (min size 150, dilation 5, min pixel difference
    50) to the image size.

    COST: the IG cost (``n_steps * len(baselines)`` forward + backward passes of the batch) plus
    ``len(scales)`` segmentations per image on the CPU.

    Args:
        n_steps: Integrated-gradients steps.
        baselines: Constant baseline values (default black 0 and white 1).
        scales: Felzenszwalb scales.
        sigma: Felzenszwalb smoothing.
        min_size: Felzenszwalb minimum segment size (default: scaled from 150 at 299x299).
        dilation: Dilation radius in pixels (default: scaled from 5 at 299x299).
        min_pixel_diff: Least number of new pixels a segment must add (default: scaled from 50).
        area_threshold: Stop growing at this covered fraction.
        internal_batch_size: Path points per IG pass (``None``: IG's default bound).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        >>> XRAI(n_steps=4, scales=(50, 100))(model, torch.rand(2, 3, 16, 16), 1).shape
        torch.Size([2, 3, 16, 16])
    """

    registry_name: ClassVar[str | None] = "xrai"
    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True

    def __init__(
        self,
        n_steps: int = 32,
        baselines: Sequence[float] = (0.0, 1.0),
        scales: Sequence[float] = (50, 100, 150, 250, 500, 1200),
        sigma: float = 0.8,
        min_size: int | None = None,
        dilation: int | None = None,
        min_pixel_diff: int | None = None,
        area_threshold: float = 1.0,
        internal_batch_size: int | None = None,
    ) -> None:
        self.n_steps = check_int("n_steps", n_steps, 1)
        if not isinstance(baselines, (list, tuple)) or not baselines:
            raise ValueError(f"Expected argument `baselines` to be a non-empty list of floats, but got {baselines!r}.")
        self.baselines = [check_float("baselines", v) for v in baselines]
        if not isinstance(scales, (list, tuple)) or not scales:
            raise ValueError(f"Expected argument `scales` to be a non-empty list of floats, but got {scales!r}.")
        self.scales = [check_float("scales", s, 0.0) for s in scales]
        self.sigma = check_float("sigma", sigma, 0.0)
        self.min_size = check_int("min_size", min_size, 1, allow_none=True)
        self.dilation = check_int("dilation", dilation, 0, allow_none=True)
        self.min_pixel_diff = check_int("min_pixel_diff", min_pixel_diff, 1, allow_none=True)
        self.area_threshold = check_float("area_threshold", area_threshold, 0.0, 1.0)
        self.internal_batch_size = check_int("internal_batch_size", internal_batch_size, 1, allow_none=True)

    def _scaled(self, value: int | None, paper: float, pixels: int, power: float) -> int:
        if value is not None:
            return value
        return max(1, round(paper * (pixels / 299**2) ** power))

    def segments(self, inputs: Tensor) -> list[Tensor]:
        """The pooled multi-scale segments of each image: a list of ``[S_i, H, W]`` bool masks."""
        x = inputs.detach()
        height, width = x.shape[-2:]
        pixels = height * width
        min_size = self._scaled(self.min_size, 150, pixels, 1.0)
        radius = self._scaled(self.dilation, 5, pixels, 0.5)
        labels = [superpixels(x, "felzenszwalb", scale=s, sigma=self.sigma, min_size=min_size) for s in self.scales]
        offs = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        disk = ((offs[:, None] ** 2 + offs[None, :] ** 2) <= radius**2 + 1e-9).to(x.dtype)[None, None]
        out = []
        for b in range(x.shape[0]):
            masks = torch.cat([F.one_hot(lab[b], int(lab[b].max()) + 1).permute(2, 0, 1) for lab in labels]).to(x.dtype)
            if radius > 0:
                masks = F.conv2d(masks[:, None], disk, padding=radius)[:, 0] > 0.5
            out.append(masks.bool())
        return out

    def attribute(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType = None,
        *,
        segments: Sequence[Tensor] | None = None,
        attributions: Tensor | None = None,
        output: OutputType = None,
    ) -> Tensor:
        """XRAI with injected segments (a list of ``[S_i, H, W]`` bool masks per image) and/or
        injected pixel attributions (``[B, H, W]`` or input-shaped, summed over channels);
        ``output`` as in :meth:`__call__`."""
        result: Tensor = self._run(
            model, inputs, lambda x, ctx: self._xrai(model, x, target, ctx, segments, attributions), output=output
        )
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        return self._xrai(model, inputs, target, ctx, None, None)

    def _xrai(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType,
        ctx: ExplainContext,
        segments: Sequence[Tensor] | None,
        attributions: Tensor | None,
    ) -> Tensor:
        x = inputs.detach()
        if x.ndim != 4:
            raise ValueError(f"XRAI: expected images [B, C, H, W], but got shape {tuple(x.shape)}.")
        batch, _, height, width = x.shape
        if segments is None:
            segments = self.segments(x)
        elif len(segments) != batch or any(s.ndim != 3 or s.shape[1:] != (height, width) for s in segments):
            raise ValueError(f"Expected `segments` as {batch} tensors of shape [S, {height}, {width}].")
        if attributions is None:
            ig = IntegratedGradients(
                n_steps=self.n_steps,
                baseline=[torch.full((1,), v, dtype=x.dtype) for v in self.baselines],
                internal_batch_size=self.internal_batch_size,
            )
            attributions = ig._attribute(model, ctx.prepare(x), target, ctx).detach()
        attr = attributions.to(x.device, x.dtype)
        if attr.ndim == 4:
            attr = attr.sum(1)
        if attr.shape != (batch, height, width):
            raise ValueError(f"Expected `attributions` of shape {(batch, height, width)}, got {tuple(attr.shape)}.")
        min_diff = self._scaled(self.min_pixel_diff, 50, height * width, 1.0)
        grown = torch.stack([self._grow(attr[b], segments[b].to(x.device).bool(), min_diff) for b in range(batch)])
        return grown[:, None].expand(-1, x.shape[1], -1, -1).contiguous()

    def _grow(self, attr: Tensor, masks: Tensor, min_diff: int) -> Tensor:
        """Greedy region growth for one image: ``[H, W]`` map of gain densities."""
        flat_attr = attr.flatten()
        pixels = flat_attr.numel()
        masks = masks.flatten(1)
        out = torch.full_like(flat_attr, float("nan"))
        covered = torch.zeros(pixels, dtype=torch.bool, device=attr.device)
        alive = torch.ones(masks.shape[0], dtype=torch.bool, device=attr.device)
        while bool(alive.any()) and float(covered.float().mean()) < self.area_threshold:
            added = masks & ~covered
            counts = added.sum(1)
            alive &= counts >= min_diff
            if not bool(alive.any()):
                break
            gains = (added.to(attr.dtype) @ flat_attr) / counts.clamp(min=1)
            gains = torch.where(alive, gains, torch.full_like(gains, -float("inf")))
            best = int(torch.argmax(gains))
            new = added[best]
            out[new] = gains[best]
            covered |= new
            alive[best] = False
        rest = ~covered
        if bool(rest.any()):
            out[rest] = flat_attr[rest].mean()
        return out.view_as(attr)
