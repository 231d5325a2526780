"""Extremal perturbation (Fong, Patrick & Vedaldi 2019), with its blur pyramid and smooth-max mask
generator."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, OutputType, TargetType, run_chunked
from lightning_xai.attribution.perturbation.base import _check_bool, _check_image, _resolve
from lightning_xai.attribution.sampling import (
    check_chunk_size,
    check_score,
    default_chunk_size,
    progress_bar,
    target_scores,
)

__all__ = [
    "ExtremalPerturbation",
    "SmoothMaskGenerator",
    "apply_pyramid",
    "blur_pyramid",
]


def _torchray_blur(inputs: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur with zero padding, as in the paper's code: taps ``i`` in
    ``[-ceil(4 sigma), ceil(4 sigma)]`` weighted ``exp(-(i / (sqrt(2) sigma + eps))^2)``, normalised
    to sum to one (``eps`` the float32 machine epsilon, so ``sigma = 0`` is the identity)."""
    width = math.ceil(4 * sigma)
    taps = torch.arange(-width, width + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-((taps / (math.sqrt(2.0) * sigma + 1.1920929e-07)) ** 2))
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    out = F.conv2d(inputs, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(width, 0), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, width), groups=channels)


def blur_pyramid(inputs: Tensor, num_levels: int = 8, max_blur: float = 20.0) -> Tensor:
    """The perturbation pyramid of extremal perturbation: ``[B, L, C, H, W]``, level ``l`` the input
    blurred with ``sigma_l = max_blur * (1 - l / (L - 1))`` (zero padding), so level 0 is the most
    blurred and level ``L - 1`` the input itself. Cost: ``L`` blurs, no model pass."""
    levels = [_torchray_blur(inputs, float(max_blur * (1 - t))) for t in torch.linspace(0, 1, num_levels)]
    return torch.stack(levels, dim=1)


def apply_pyramid(pyramid: Tensor, mask: Tensor, sample: Tensor) -> Tensor:
    """Perturb with a mask through the pyramid: pixel ``(v, u)`` of row ``n`` takes level
    ``m (L - 1)`` of ``pyramid[sample[n]]``, interpolated linearly between the two nearest levels
    (mask 1: the input, mask 0: the most blurred level). ``mask`` ``[N, 1, H, W]`` in ``[0, 1]``,
    ``sample`` ``[N]`` indexes the image; returns ``[N, C, H, W]``."""
    levels = pyramid.shape[1]
    pos = mask.unsqueeze(1) * (levels - 1)  # [N, 1, 1, H, W]
    low = pos.detach().floor()
    frac = pos - low
    low = low.long().expand(-1, 1, pyramid.shape[2], -1, -1)
    rows = pyramid[sample]
    y0 = rows.gather(1, low)
    y1 = rows.gather(1, (low + 1).clamp(max=levels - 1))
    return ((1 - frac) * y0 + frac * y1).squeeze(1)


class SmoothMaskGenerator:
    """The smooth-max mask generator of extremal perturbation (Fong et al. 2019, section 3.3).

    Parameters ``p`` ``[N, 1, ceil(H / step), ceil(W / step)]`` sit on a grid of stride ``step``
    (offset by a margin of ``sigma`` pixels). Each output pixel ``u`` looks at the ``(2r + 1)^2``
    parameters around its grid cell (``r = 1 + ceil(sigma / step)``), weights parameter ``i`` by
    ``k_i(u) = exp(-2 max(|u - c_i| / sigma - 1/2, 0)^2)`` (``c_i`` its grid position) and pools
    the products ``z_i = k_i(u) p_i`` with the smooth max ``sum_i z_i softmax(coldness z)_i``; the
    result is clamped to ``[0, 1]``. :meth:`generate` returns the mask cropped to ``H x W`` and the
    full mask with its margin (the area constraint ranks the full one). The kernel weights are
    computed once, ``[(2r + 1)^2, H_out, W_out]``.

    Args:
        shape: ``(H, W)`` of the image.
        step: Parameter grid stride in pixels.
        sigma: Kernel radius in pixels (also the margin).
        coldness: Temperature of the smooth max.
    """

    def __init__(self, shape: tuple[int, int], step: int, sigma: float, coldness: float = 20.0) -> None:
        self.shape = shape
        self.step = step
        self.sigma = sigma
        self.coldness = coldness
        self.margin = sigma
        self.padding = 1 + math.ceil((self.margin + sigma) / step)
        self.radius = 1 + math.ceil(sigma / step)
        self.shape_in = tuple(math.ceil(s / step) for s in shape)
        size = 2 * self.radius + 1
        self.shape_mid = tuple(s + 2 * self.padding - size + 1 for s in self.shape_in)
        self.shape_out = tuple(step * s - step + 1 for s in self.shape_mid)
        # grid cell of each output pixel, per axis: floor(u * mid / (step * mid)) (float32, as the paper's code)
        axes = []
        for mid, out in zip(self.shape_mid, self.shape_out):
            u = torch.arange(out, dtype=torch.float32)
            scale = torch.tensor(mid, dtype=torch.float32) / torch.tensor(step * mid, dtype=torch.float32)
            cell = torch.floor(scale * u)[None, :] + torch.arange(size, dtype=torch.float32)[:, None] - self.padding
            axes.append(u[None, :] - (self.margin + step * cell))  # [size, out]: offset to each neighbour
        dy, dx = axes
        dist = torch.sqrt(dy[:, None, :, None] ** 2 + dx[None, :, None, :] ** 2)  # [size, size, Ho, Wo]
        self.weight = torch.exp(-2 * ((dist / sigma - 0.5).clamp(min=0) ** 2)).reshape(size * size, *self.shape_out)

    def generate(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """``(cropped [N, 1, H, W], full [N, 1, H_out, W_out])`` masks from ``params`` ``[N, 1, *shape_in]``."""
        size = 2 * self.radius + 1
        neighbours = F.unfold(params, (size, size), padding=self.padding)
        neighbours = neighbours.view(params.shape[0], size * size, *self.shape_mid)
        up = neighbours.repeat_interleave(self.step, dim=2).repeat_interleave(self.step, dim=3)
        z = up[:, :, : self.shape_out[0], : self.shape_out[1]] * self.weight.to(params)
        full = (z * torch.softmax(self.coldness * z, dim=1)).sum(dim=1, keepdim=True).clamp(0, 1)
        top = round(self.margin)
        return full[:, :, top : top + self.shape[0], top : top + self.shape[1]], full


class ExtremalPerturbation(Explainer):
    """Extremal perturbation (Fong, Patrick & Vedaldi 2019), the method of TorchRay's
    ``extremal_perturbation``: for each area fraction ``a``, the smooth mask of area ``a`` that keeps
    (``"preserve"``) or deletes (``"delete"``) the most evidence for the target.

    * **Mask**: :class:`SmoothMaskGenerator` (parameters every ``step`` pixels, radius ``sigma``,
      smooth max with coldness 20), parameters initialised to 1.
    * **Perturbation**: the blur pyramid (:func:`blur_pyramid`: ``num_levels`` levels, blur up to
      ``max_blur``), the mask selecting a level per pixel (:func:`apply_pyramid`; ``1 - m`` for
      ``"delete"``).
    * **Objective**: reward ``f_c(x_m)`` (``-f_c`` for delete; ``f_c`` the target's logit by
      default) minus the area (ranking) constraint ``lambda_t mean((sort(m_full) - r_a)^2)``,
      ``r_a`` the sorted reference with ``int(N (1 - a))`` zeros then ones over the ``N`` pixels of
      the full mask; ``lambda_t = area_weight * area_growth^t``.
    * **Optimiser**: ``torch.optim.SGD(lr, momentum=0.9, dampening=0.9)`` on the parameters,
      clamped to ``[0, 1]`` after each step; with ``jitter`` the perturbed input is flipped
      horizontally on even iterations.

    The returned mask is the one the last iteration evaluated (before its update), as TorchRay
    returns. Every image and area is optimised together (TorchRay: one image per call); the
    updates are per parameter, so batching changes nothing but floating-point rounding in the
    model. Returned: the sum of the masks over the areas (one area: the mask itself),
    ``[B, 1, H, W]``; :meth:`masks` gives them apart. Deterministic: no seed. The defaults are the
    paper's (for 224-pixel images).

    COST: ``n_iter`` forward + backward passes of ``B * len(areas)`` inputs (gradients w.r.t. the
    mask parameters only), i.e. ``n_iter * len(areas)`` = 800 per image and area by default, plus
    one forward to resolve the target.

    Args:
        areas: Area fractions in ``(0, 1)``.
        variant: ``"preserve"`` or ``"delete"``.
        n_iter: Optimisation steps (TorchRay's ``max_iter``).
        lr: SGD learning rate.
        momentum: SGD momentum (and dampening, as in TorchRay).
        step: Mask parameter stride in pixels.
        sigma: Mask kernel radius in pixels.
        max_blur: Largest blur of the pyramid (standard deviation, pixels).
        num_levels: Levels of the blur pyramid.
        area_weight: Initial weight of the area constraint.
        area_growth: Factor applied to the area weight after each iteration.
        jitter: Flip the perturbed input horizontally on even iterations.
        score: ``"logit"`` (default, TorchRay's ``simple_reward``), ``"softmax"`` or ``"log_softmax"``.
        internal_batch_size: Inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> ExtremalPerturbation(areas=[0.2], n_iter=5, step=2, sigma=4)(model, torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False
    VARIANTS: ClassVar[tuple[str, ...]] = ("preserve", "delete")

    def __init__(
        self,
        areas: Sequence[float] = (0.1,),
        variant: str = "preserve",
        n_iter: int = 800,
        lr: float = 0.01,
        momentum: float = 0.9,
        step: int = 7,
        sigma: float = 21.0,
        max_blur: float = 20.0,
        num_levels: int = 8,
        area_weight: float = 300.0,
        area_growth: float = 1.0035,
        jitter: bool = True,
        score: str = "logit",
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(areas, (int, float)) and not isinstance(areas, bool):
            areas = [areas]
        if not isinstance(areas, (list, tuple)) or not areas:
            raise ValueError(f"Expected argument `areas` to be a non-empty list of floats, but got {areas!r}.")
        self.areas = [check_float("areas", a, 0.0, 1.0) for a in areas]
        if any(a in (0.0, 1.0) for a in self.areas):
            raise ValueError(f"Expected every area in the open (0, 1) range, but got {self.areas}.")
        if variant not in self.VARIANTS:
            raise ValueError(f"Expected argument `variant` to be one of {list(self.VARIANTS)}, but got {variant!r}.")
        self.variant = variant
        self.n_iter = check_int("n_iter", n_iter, 1)
        self.lr = check_float("lr", lr, 0.0)
        self.momentum = check_float("momentum", momentum, 0.0, 1.0)
        self.step = check_int("step", step, 1)
        self.sigma = check_float("sigma", sigma, 0.0)
        if self.sigma == 0:
            raise ValueError("Expected argument `sigma` to be positive, but got 0.")
        self.max_blur = check_float("max_blur", max_blur, 0.0)
        self.num_levels = check_int("num_levels", num_levels, 2)
        self.area_weight = check_float("area_weight", area_weight, 0.0)
        self.area_growth = check_float("area_growth", area_growth, 0.0)
        self.jitter = _check_bool("jitter", jitter)
        self.score = check_score(score)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def masks(
        self, model: nn.Module, inputs: Tensor, target: TargetType = None, *, output: OutputType = None
    ) -> Tensor:
        """The optimised masks, ``[B, len(areas), H, W]`` (channel ``j`` for ``areas[j]``);
        ``output`` as in :meth:`__call__`."""
        result: Tensor = self._run(model, inputs, lambda x, ctx: self._masks(model, x, target), output=output)
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        return self._masks(model, inputs, target).sum(dim=1, keepdim=True)

    def _masks(self, model: nn.Module, inputs: Tensor, target: TargetType) -> Tensor:
        x = inputs.detach()
        size = _check_image(x, "ExtremalPerturbation", ("step", self.step))
        _, resolved = _resolve(model, x, target)
        batch, n_areas = x.shape[0], len(self.areas)
        pyramid = blur_pyramid(x, self.num_levels, self.max_blur)
        mask_gen = SmoothMaskGenerator(size, self.step, self.sigma)
        full_pixels = mask_gen.shape_out[0] * mask_gen.shape_out[1]
        # sorted reference of row b * A + j: int(N (1 - a_j)) zeros, then ones
        zeros = torch.tensor([int(full_pixels * (1 - a)) for a in self.areas], device=x.device).repeat(batch)
        reference = (torch.arange(full_pixels, device=x.device) >= zeros[:, None]).to(x.dtype)
        sample = torch.arange(batch, device=x.device).repeat_interleave(n_areas)
        sign = 1.0 if self.variant == "preserve" else -1.0
        params = x.new_ones(batch * n_areas, 1, *mask_gen.shape_in).requires_grad_(True)
        optimizer = torch.optim.SGD([params], lr=self.lr, momentum=self.momentum, dampening=self.momentum)
        last = x.new_empty(batch * n_areas, 1, *size)
        chunk = default_chunk_size(x, self.internal_batch_size)
        weight = self.area_weight
        with progress_bar(self.n_iter, self.progress, "ExtremalPerturbation") as update:
            for t in range(self.n_iter):
                grad = torch.empty_like(params)

                def body(rows: slice, t: int = t, weight: float = weight, grad: Tensor = grad) -> None:
                    p = params.detach()[rows].requires_grad_(True)
                    cropped, full = mask_gen.generate(p)
                    perturbed = apply_pyramid(pyramid, cropped if sign > 0 else 1 - cropped, sample[rows])
                    if self.jitter and t % 2 == 0:
                        perturbed = perturbed.flip(dims=(3,))
                    reward = sign * target_scores(model(perturbed), resolved[sample[rows]], self.score)
                    area = (full.flatten(1).sort(dim=1).values - reference[rows]).square().mean(dim=1)
                    (grad[rows],) = torch.autograd.grad((weight * area - reward).sum(), p)
                    last[rows] = cropped.detach()

                run_chunked(
                    params.shape[0],
                    chunk,
                    body,
                    method="ExtremalPerturbation",
                    adaptive=self.internal_batch_size is None,
                )
                params.grad = grad
                optimizer.step()
                with torch.no_grad():
                    params.clamp_(0, 1)
                weight *= self.area_growth
                update(1)
        return last.view(batch, n_areas, *size)
