"""RISE (Petsiuk, Das & Saenko 2018): the score-weighted sum of random smooth masks."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType, chunks
from lightning_xai.attribution.perturbation.base import _check_bool, _check_image, _resolve
from lightning_xai.attribution.sampling import (
    check_chunk_size,
    check_score,
    default_chunk_size,
    generator,
    progress_bar,
    target_scores,
)

__all__ = [
    "RISE",
]


# RISE
class RISE(Explainer):
    """RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko 2018).

    ``N`` binary grids of ``ceil(H / cell_size) x ceil(W / cell_size)`` cells, each cell on with
    probability ``p``, are upsampled bilinearly to ``(cells + 1) * cell_size`` and cropped to
    ``H x W`` at a random shift in ``[0, cell_size)`` per axis, giving smooth masks ``M_i`` in
    ``[0, 1]``. The map is ``S = 1 / (N p) * sum_i f_c(x * M_i) M_i``, a Monte-Carlo estimate of
    ``E[f_c(x * M) M] / p`` whose error falls as ``1 / sqrt(N)``. ``f_c`` is the target's softmax
    probability (the paper), or its logit with ``score="logit"``. The same masks explain every
    input of a batch.

    COST: ``n_masks`` forward passes per input (``n_masks * B`` rows, in chunks); no backward pass.

    Args:
        n_masks: Number of masks ``N``.
        cell_size: Side of a grid cell in pixels.
        p: Probability that a cell is on.
        score: ``"softmax"`` (default), ``"logit"`` or ``"log_softmax"``.
        seed: Seed of the private mask generator.
        internal_batch_size: Masked inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Raises:
        ValueError: ``n_masks < 1``, ``cell_size < 1``, ``p`` outside ``(0, 1]``, unknown score;
            when called, a cell larger than the image.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> RISE(n_masks=64, cell_size=2)(model, torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    registry_name: ClassVar[str | None] = "rise"
    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False

    def __init__(
        self,
        n_masks: int = 2000,
        cell_size: int = 8,
        p: float = 0.5,
        score: str = "softmax",
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.n_masks = check_int("n_masks", n_masks, 1)
        self.cell_size = check_int("cell_size", cell_size, 1)
        self.p = check_float("p", p, 0.0, 1.0)
        if self.p == 0.0:
            raise ValueError("Expected argument `p` to be a finite float in the (0, 1] range, but got 0.0.")
        self.score = check_score(score)
        self.seed = check_int("seed", seed, 0)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def grids(self, size: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
        """The random cell grids ``[N, 1, gh, gw]`` (0/1) and shifts ``[N, 2]`` for images of ``size``."""
        height, width = size
        if self.cell_size > max(height, width):
            raise ValueError(f"RISE: cell_size {self.cell_size} is larger than the image {tuple(size)}.")
        gen = generator(self.seed, device)
        gh, gw = math.ceil(height / self.cell_size), math.ceil(width / self.cell_size)
        grids = (torch.rand(self.n_masks, 1, gh, gw, generator=gen, device=device) < self.p).float()
        shifts = torch.randint(0, self.cell_size, (self.n_masks, 2), generator=gen, device=device)
        return grids, shifts

    def upsample_masks(self, grids: Tensor, shifts: Tensor, size: tuple[int, int]) -> Tensor:
        """Smooth ``[n, 1, H, W]`` masks from grids and shifts (bilinear, ``align_corners=False``)."""
        height, width = size
        gh, gw = grids.shape[-2:]
        up = F.interpolate(
            grids, size=((gh + 1) * self.cell_size, (gw + 1) * self.cell_size), mode="bilinear", align_corners=False
        )
        n = grids.shape[0]
        ys = (shifts[:, 0:1] + torch.arange(height, device=grids.device)).view(n, 1, height, 1)
        up = up.gather(2, ys.expand(n, 1, height, up.shape[-1]))
        xs = (shifts[:, 1:2] + torch.arange(width, device=grids.device)).view(n, 1, 1, width)
        return up.gather(3, xs.expand(n, 1, height, width))

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        _check_image(x, "RISE")
        size = (x.shape[-2], x.shape[-1])
        grids, shifts = self.grids(size, x.device)
        _, resolved = _resolve(model, x, target)
        batch = x.shape[0]
        per_chunk = max(1, default_chunk_size(x, self.internal_batch_size) // batch)
        saliency = x.new_zeros(batch, size[0] * size[1])
        with torch.no_grad(), progress_bar(self.n_masks, self.progress, "RISE") as update:
            for part in chunks(self.n_masks, per_chunk):
                masks = self.upsample_masks(grids[part], shifts[part], size).to(x.dtype)  # [k, 1, H, W]
                k = masks.shape[0]
                rows = (x.unsqueeze(1) * masks.unsqueeze(0)).flatten(0, 1)  # row b * k + i
                scores = target_scores(model(rows), resolved.repeat_interleave(k), self.score).view(batch, k)
                saliency += scores @ masks.view(k, -1)
                update(k)
        return (saliency / (self.n_masks * self.p)).view(batch, 1, *size)
