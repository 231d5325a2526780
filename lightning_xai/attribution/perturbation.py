"""Input perturbation: occlusion, RISE, meaningful and extremal perturbation, prediction
difference analysis and counterfactual in-filling.

Every method here is model-agnostic: it asks the model about perturbed copies of the input and
never differentiates the model w.r.t. its parameters. Perturbed inputs go through the model in
chunks of ``internal_batch_size`` rows (default: a device-aware bound, see
:func:`~lightning_xai.attribution._sampling.default_chunk_size`); random draws come from a private
``torch.Generator`` seeded with ``seed`` (the global RNG is untouched) and are shared by every
input of a batch, so a batch gives the same maps as its inputs explained one by one.

* :class:`Occlusion` (Zeiler & Fergus 2013): score drop when a sliding window is replaced by a
  baseline; equal to captum ``Occlusion``. Input-shaped.
* :class:`RISE` (Petsiuk et al. 2018): score-weighted sum of random smooth masks.
* :class:`MeaningfulPerturbation` (Fong & Vedaldi 2017): the smallest smooth blur mask that
  deletes the evidence.
* :class:`ExtremalPerturbation` (Fong, Patrick & Vedaldi 2019): the smooth-max mask of a fixed
  area that keeps (or deletes) the most evidence through a blur pyramid, the area enforced by a
  ranking constraint; TorchRay's method (its oracle test compares with ``torchray``).
* :class:`PredictionDifference` (Zintgraf et al. 2017): weight of evidence of each patch,
  marginalised by conditional Gaussian sampling from its neighbourhood.
* :class:`CounterfactualInfill` (Chang et al. 2019, FIDO): a Concrete dropout mask whose removed
  pixels come from an in-filler (blur, local mean, conditional Gaussian, or any ``nn.Module``).

The region methods (RISE, meaningful and extremal perturbation, in-filling) return non-negative
``[B, 1, H, W]`` maps; occlusion and prediction difference return signed, input-shaped maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution._sampling import (
    check_chunk_size,
    check_score,
    default_chunk_size,
    evaluate_rows,
    generator,
    progress_bar,
    target_scores,
)
from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    OutputType,
    TargetType,
    chunks,
    observe,
    resolve_target,
    run_chunked,
)

__all__ = [
    "BlurInfiller",
    "ConditionalGaussianInfiller",
    "CounterfactualInfill",
    "ExtremalPerturbation",
    "INFILLERS",
    "LocalMeanInfiller",
    "MeaningfulPerturbation",
    "Occlusion",
    "PredictionDifference",
    "RISE",
    "SmoothMaskGenerator",
    "apply_pyramid",
    "blur_pyramid",
    "smooth",
]

IntOrTuple = Union[int, Sequence[int]]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Expected argument `{name}` to be a bool, but got {value!r}.")
    return value


def _int_tuple(name: str, value: Any, low: int) -> tuple[int, ...]:
    items = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, (tuple, list)) or not items:
        raise TypeError(f"Expected argument `{name}` to be an int or a tuple of ints, but got {value!r}.")
    return tuple(check_int(name, v, low) for v in items)


def _check_image(inputs: Tensor, method: str) -> None:
    if inputs.ndim != 4:
        raise ValueError(f"{method}: expected images [B, C, H, W], but got shape {tuple(inputs.shape)}.")


def smooth(inputs: Tensor, sigma: float) -> Tensor:
    """Differentiable separable Gaussian blur of ``[N, C, H, W]`` maps (radius ``ceil(3 sigma)``,
    edges replicated); ``sigma <= 0`` returns the input.

    Examples:
        >>> smooth(torch.rand(2, 1, 8, 8), 1.0).shape
        torch.Size([2, 1, 8, 8])
    """
    if sigma <= 0:
        return inputs
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=inputs.dtype, device=inputs.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = inputs.shape[1]
    out = F.pad(inputs, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _box(inputs: Tensor, size: int) -> Tensor:
    """Mean over a ``size x size`` box (zero padding counted as zero)."""
    return F.avg_pool2d(inputs, size, stride=1, padding=size // 2, count_include_pad=True)[
        ..., : inputs.shape[-2], : inputs.shape[-1]
    ]


def _total_variation(mask: Tensor, beta: float) -> Tensor:
    """``[N]`` mean of ``|d mask|^beta`` over both image axes."""
    dy = (mask[..., 1:, :] - mask[..., :-1, :]).abs().pow(beta).flatten(1).mean(dim=1)
    dx = (mask[..., :, 1:] - mask[..., :, :-1]).abs().pow(beta).flatten(1).mean(dim=1)
    return dx + dy


def _adam(
    params: Tensor,
    loss_fn: Callable[[Tensor, slice, int], Tensor],
    *,
    n_iter: int,
    lr: float,
    chunk_size: int,
    project: Callable[[Tensor], Tensor] | None,
    progress: bool,
    desc: str,
    adaptive: bool = False,
) -> Tensor:
    """Minimise ``loss_fn(params[rows], rows, iteration).sum()`` row-wise with Adam (betas 0.9,
    0.999). Rows are independent: each row's update depends on its own gradient only, so chunking
    and batching do not change the result. Gradients are taken w.r.t. the mask parameters only."""
    params = params.detach().clone()
    first = torch.zeros_like(params)
    second = torch.zeros_like(params)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    with progress_bar(n_iter, progress, desc) as update:
        for step in range(1, n_iter + 1):
            grad = torch.empty_like(params)

            def body(rows: slice, step: int = step, grad: Tensor = grad, source: Tensor = params) -> None:
                p = source[rows].detach().requires_grad_(True)
                (g,) = torch.autograd.grad(loss_fn(p, rows, step).sum(), p)
                grad[rows] = g

            run_chunked(params.shape[0], chunk_size, body, method=desc, adaptive=adaptive)
            first.mul_(beta1).add_(grad, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (second / (1 - beta2**step)).sqrt_().add_(eps)
            params.addcdiv_(first, denom, value=-lr / (1 - beta1**step))
            if project is not None:
                params = project(params)
            update(1)
    return params


def _resolve(model: nn.Module, x: Tensor, target: TargetType) -> tuple[Tensor, Tensor]:
    """One clean forward pass: ``(outputs, resolved target)``."""
    with torch.no_grad():
        outputs = model(x)
    return outputs, resolve_target(target, outputs)


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------
class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus 2013), exactly as captum ``Occlusion``.

    A window slides over the input with ``stride``; at each position the window is replaced by
    ``baseline`` (``x * (1 - m) + baseline * m``) and the drop of the target output
    ``S_c(x) - S_c(x_occluded)`` is credited to every element of the window. Each element's
    attribution is the mean drop over the windows that cover it. Window starts are
    ``0, s, 2s, ...`` up to ``ceil((n - w) / s)`` steps, the last window clipped at the edge (captum's
    positions), so every element is covered.

    ``window`` and ``stride`` are an int (every spatial axis), a tuple over the spatial axes
    (every channel occluded together), or a tuple over the channel and spatial axes (captum's
    ``sliding_window_shapes``). The occlusion masks are separable, so the credit assignment is a
    contraction of the ``[B, positions]`` drops with one ``[positions, n]`` cover matrix per axis:
    no Python loop over windows.

    COST: ``1 + P`` forward passes per input (``P`` window positions; the first scores the
    input itself), in chunks of at most ``internal_batch_size`` rows that never mix two inputs
    (so a batch gives bitwise the maps of its inputs one by one); no backward pass.

    Args:
        window: Window shape.
        stride: Step between windows (default: the window, no overlap); at most the window
            where the window does not span the axis, as captum requires.
        baseline: The occluding value: a float or a tensor broadcastable to the inputs.
        internal_batch_size: Occluded inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Raises:
        TypeError / ValueError: bad ``window``, ``stride`` (0 or negative), ``baseline`` or
            ``internal_batch_size``; when called, a window larger than the input or a stride larger than
            its window (before any forward pass).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> Occlusion(window=(4, 4), stride=(2, 2))(model, torch.rand(2, 3, 8, 8), 1).shape
        torch.Size([2, 3, 8, 8])
    """

    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True

    def __init__(
        self,
        window: IntOrTuple = (8, 8),
        stride: IntOrTuple | None = None,
        baseline: float | Tensor = 0.0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.window = _int_tuple("window", window, 1)
        self.stride = self.window if stride is None else _int_tuple("stride", stride, 1)
        if len(self.stride) != len(self.window) and len(self.stride) != 1 and len(self.window) != 1:
            raise ValueError(
                f"Expected `window` and `stride` of the same length, but got {self.window} and {self.stride}."
            )
        if isinstance(baseline, Tensor):
            if not baseline.is_floating_point():
                raise TypeError(f"Expected a floating-point baseline tensor, but got dtype {baseline.dtype}.")
            self.baseline: float | Tensor = baseline.detach()
        else:
            self.baseline = check_float("baseline", baseline)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def _shapes(self, dims: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Window and stride over every non-batch axis (channel axis included)."""

        def full(spec: tuple[int, ...], name: str) -> tuple[int, ...]:
            if len(spec) == 1:
                spec = spec * (len(dims) - 1)
            if len(spec) == len(dims) - 1:
                return (dims[0], *spec) if name == "window" else (1, *spec)
            if len(spec) == len(dims):
                return spec
            raise ValueError(
                f"Occlusion: `{name}` {spec} does not fit inputs with non-batch shape {dims}: give one value per "
                f"spatial axis ({len(dims) - 1}) or per channel and spatial axis ({len(dims)})."
            )

        window, stride = full(self.window, "window"), full(self.stride, "stride")
        for axis, (n, w, s) in enumerate(zip(dims, window, stride)):
            if w > n:
                raise ValueError(f"Occlusion: window {window} is larger than the input {dims} along axis {axis + 1}.")
            if w < n and s > w:
                raise ValueError(
                    f"Occlusion: stride {stride} is larger than the window {window} along axis {axis + 1}: some "
                    "elements would never be occluded."
                )
        return window, stride

    def cover_matrices(self, dims: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        """Per non-batch axis, the ``[positions, n]`` 0/1 matrix of which elements each window
        position covers (captum's positions)."""
        window, stride = self._shapes(dims)
        mats = []
        for n, w, s in zip(dims, window, stride):
            count = math.ceil((n - w) / s) + 1
            starts = torch.arange(count, device=device) * s
            idx = torch.arange(n, device=device)
            mats.append(((idx >= starts[:, None]) & (idx < starts[:, None] + w)).to(dtype))
        return mats

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        dims = tuple(x.shape[1:])
        mats = self.cover_matrices(dims, x.device, x.dtype)  # validates before any forward pass
        try:
            baseline = torch.broadcast_to(torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device), x.shape)
        except RuntimeError:
            raise ValueError(
                f"Occlusion: the baseline of shape {tuple(torch.as_tensor(self.baseline).shape)} does not broadcast "
                f"to the inputs' shape {tuple(x.shape)}."
            ) from None
        _, resolved = _resolve(model, x, target)
        batch = x.shape[0]
        counts = [m.shape[0] for m in mats]
        n_pos = math.prod(counts)
        per_image = n_pos + 1  # row 0 of each image: the image itself (its clean score)
        strides = [math.prod(counts[d + 1 :]) for d in range(len(counts))]
        ones = [1] * len(dims)
        scalar = None if isinstance(self.baseline, Tensor) else float(self.baseline)

        def rows(sl: slice) -> Tensor:
            # x * (1 - m) + baseline * m for a 0/1 mask m is an exact select: fill the window instead
            r = torch.arange(sl.start, sl.stop, device=x.device)
            b, p = r // per_image, r % per_image - 1
            mask = (p >= 0).view(-1, *ones)
            p = p.clamp(min=0)
            for d, m in enumerate(mats):
                shape = [-1] + [1] * len(dims)
                shape[d + 1] = dims[d]
                mask = mask & m[(p // strides[d]) % counts[d]].bool().view(shape)
            out = x[b]
            if scalar is not None:
                return out.masked_fill_(mask, scalar)
            return torch.where(mask, baseline[b], out)

        # chunks never straddle two images: each image's forward passes have the same shapes
        # whatever the batch, so a batch gives bitwise the maps of its images one by one
        scores = evaluate_rows(
            model,
            rows,
            resolved.repeat_interleave(per_image),
            chunk_size=default_chunk_size(x, self.internal_batch_size),
            adaptive=self.internal_batch_size is None,
            score="logit",
            progress=self.progress,
            desc="Occlusion",
            groups=[per_image] * batch,
        ).view(batch, per_image)
        drops = (scores[:, :1] - scores[:, 1:]).reshape(batch, *counts)
        total = drops
        for m in mats:  # contract the leading position axis, append the element axis
            total = torch.tensordot(total, m, dims=([1], [0]))
        weight = mats[0].sum(0).view(-1, *ones[1:])
        for d, m in enumerate(mats[1:], start=1):
            shape = [1] * len(dims)
            shape[d] = dims[d]
            weight = weight * m.sum(0).view(shape)
        return total / weight.unsqueeze(0)


# --------------------------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# mask optimisation: meaningful and extremal perturbation
# --------------------------------------------------------------------------------------------
def _mask_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    return math.ceil(size[0] / scale), math.ceil(size[1] / scale)


def _upsample(params: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(params, size=size, mode="bilinear", align_corners=False)


class MeaningfulPerturbation(Explainer):
    """Meaningful perturbation (Fong & Vedaldi 2017): the smallest smooth deletion that drops the
    class score.

    A keep-mask ``m`` in ``[0, 1]`` at ``1 / mask_scale`` of the image resolution, upsampled
    bilinearly, blends the input with a blurred copy, ``x_m = m x + (1 - m) blur(x)``; Adam
    minimises ``l1_coeff * mean|1 - m| + tv_coeff * TV_beta(m) + f_c(x_m)`` over ``n_iter`` steps
    (the mask projected onto ``[0, 1]`` after each step), with ``f_c`` the target's softmax
    probability (the paper). The returned map is the deletion ``1 - m`` (high = evidence).
    Deterministic: no seed.

    COST: ``n_iter`` forward + backward passes of the batch (gradients w.r.t. the mask only).

    Args:
        n_iter: Optimisation steps.
        lr: Adam learning rate.
        l1_coeff: Weight of the deletion area ``mean|1 - m|``.
        tv_coeff: Weight of the total variation ``mean |grad m|^tv_beta``.
        tv_beta: Exponent of the total variation.
        mask_scale: Downsampling factor of the mask parameters.
        blur_sigma: Standard deviation of the deleting blur in pixels (default: a tenth of the
            image's longer side).
        score: ``"softmax"`` (default), ``"logit"`` or ``"log_softmax"``.
        internal_batch_size: Inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> MeaningfulPerturbation(n_iter=5, mask_scale=2)(model, torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False

    def __init__(
        self,
        n_iter: int = 300,
        lr: float = 0.1,
        l1_coeff: float = 0.05,
        tv_coeff: float = 0.2,
        tv_beta: float = 3.0,
        mask_scale: int = 4,
        blur_sigma: float | None = None,
        score: str = "softmax",
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.n_iter = check_int("n_iter", n_iter, 1)
        self.lr = check_float("lr", lr, 0.0)
        self.l1_coeff = check_float("l1_coeff", l1_coeff, 0.0)
        self.tv_coeff = check_float("tv_coeff", tv_coeff, 0.0)
        self.tv_beta = check_float("tv_beta", tv_beta, 1.0)
        self.mask_scale = check_int("mask_scale", mask_scale, 1)
        self.blur_sigma = None if blur_sigma is None else check_float("blur_sigma", blur_sigma, 0.0)
        self.score = check_score(score)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        _check_image(x, "MeaningfulPerturbation")
        size = (x.shape[-2], x.shape[-1])
        if self.mask_scale > max(size):
            raise ValueError(f"MeaningfulPerturbation: mask_scale {self.mask_scale} is larger than the image {size}.")
        _, resolved = _resolve(model, x, target)
        sigma = self.blur_sigma if self.blur_sigma is not None else max(size) / 10
        blurred = smooth(x, sigma)
        params = x.new_ones(x.shape[0], 1, *_mask_size(size, self.mask_scale))

        def loss(p: Tensor, rows: slice, step: int) -> Tensor:
            m = _upsample(p, size)
            perturbed = m * x[rows] + (1 - m) * blurred[rows]
            s = target_scores(model(perturbed), resolved[rows], self.score)
            return (
                s + self.l1_coeff * (1 - m).abs().flatten(1).mean(1) + self.tv_coeff * _total_variation(m, self.tv_beta)
            )

        params = _adam(
            params,
            loss,
            n_iter=self.n_iter,
            lr=self.lr,
            chunk_size=default_chunk_size(x, self.internal_batch_size),
            adaptive=self.internal_batch_size is None,
            project=lambda p: p.clamp_(0, 1),
            progress=self.progress,
            desc="MeaningfulPerturbation",
        )
        return 1 - _upsample(params, size)


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
        _check_image(x, "ExtremalPerturbation")
        size = (x.shape[-2], x.shape[-1])
        if self.step > max(size):
            raise ValueError(f"ExtremalPerturbation: step {self.step} is larger than the image {size}.")
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

                run_chunked(params.shape[0], chunk, body, method="ExtremalPerturbation", adaptive=self.internal_batch_size is None)
                params.grad = grad
                optimizer.step()
                with torch.no_grad():
                    params.clamp_(0, 1)
                weight *= self.area_growth
                update(1)
        return last.view(batch, n_areas, *size)


# --------------------------------------------------------------------------------------------
# prediction difference analysis
# --------------------------------------------------------------------------------------------
class PredictionDifference(Explainer):
    """Prediction difference analysis (Zintgraf, Cohen, Adel & Welling 2017).

    For each ``window x window`` patch (all channels, every ``stride`` pixels) the patch is
    marginalised: ``p(c | x without the patch) ~ mean_s p(c | x with patch sample s)``, each
    sample drawn from a Gaussian *conditioned on the patch's frame* of ``padding`` pixels
    (``sampler="conditional"``, the paper's conditional sampling), or from the patch's
    unconditional Gaussian (``"marginal"``). The Gaussian's mean and covariance over
    ``(window + 2 padding)^2 * C`` pixel values are estimated from every such patch of the image
    itself (reflect-padded; a ridge of ``1e-3`` times the mean variance keeps it invertible):
    one conditioning matrix serves every position, so all samples are drawn at once. The weight
    of evidence is ``WE = log2 odds(p(c|x)) - log2 odds(p(c|x without the patch))`` with Laplace
    correction ``p <- (p N + 1) / (N + K)`` (``N = laplace_count``, ``K`` classes); a pixel's
    value is the mean ``WE`` of the windows covering it, the same in every channel (an
    input-shaped, signed map). A region the model ignores gets 0.
    Standard-normal draws come from the private generator and are shared by every position and
    input.

    COST: ``1 + P * n_samples`` forward passes per input (``P`` window positions); no backward.

    Args:
        window: Patch side ``k`` in pixels.
        stride: Step between patches (at most ``window``).
        padding: Width of the conditioning frame around the patch.
        n_samples: Samples per patch.
        sampler: ``"conditional"`` or ``"marginal"``.
        laplace_count: ``N`` of the Laplace correction.
        seed: Seed of the private generator.
        internal_batch_size: Inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> PredictionDifference(window=4, stride=2, n_samples=4)(model, torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True
    SAMPLERS: ClassVar[tuple[str, ...]] = ("conditional", "marginal")

    def __init__(
        self,
        window: int = 4,
        stride: int = 1,
        padding: int = 2,
        n_samples: int = 10,
        sampler: str = "conditional",
        laplace_count: int = 1000,
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.window = check_int("window", window, 1)
        self.stride = check_int("stride", stride, 1, self.window)
        self.padding = check_int("padding", padding, 0)
        self.n_samples = check_int("n_samples", n_samples, 1)
        if sampler not in self.SAMPLERS:
            raise ValueError(f"Expected argument `sampler` to be one of {list(self.SAMPLERS)}, but got {sampler!r}.")
        if sampler == "conditional" and self.padding == 0:
            raise ValueError("Expected argument `padding` >= 1 with sampler 'conditional', but got 0.")
        self.sampler = sampler
        self.laplace_count = check_int("laplace_count", laplace_count, 1)
        self.seed = check_int("seed", seed, 0)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def _positions(self, size: tuple[int, int]) -> list[Tensor]:
        out = []
        for n in size:
            if self.window > n:
                raise ValueError(f"PredictionDifference: window {self.window} is larger than the image {tuple(size)}.")
            count = math.ceil((n - self.window) / self.stride) + 1
            out.append((torch.arange(count) * self.stride).clamp(max=n - self.window))
        return out

    def _conditional_samples(self, image: Tensor, ys: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        """``[P, S, C, k, k]`` patch samples for one ``[C, H, W]`` image at top-left corners
        ``(ys, xs)`` (``[P]`` each) from standard draws ``z`` ``[S, C * k * k]``."""
        k, pad = self.window, self.padding
        channels = image.shape[0]
        side = k + 2 * pad
        padded = F.pad(image.unsqueeze(0), (pad, pad, pad, pad), mode="reflect" if pad else "constant")
        # every (side x side) patch of the padded image: the Gaussian's statistics
        patches = F.unfold(padded.double(), side).squeeze(0).T  # [L, C*side*side]
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / max(1, patches.shape[0] - 1)
        cov = cov + 1e-3 * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(
            cov.shape[0], dtype=cov.dtype, device=cov.device
        )
        grid = torch.zeros(channels, side, side, dtype=torch.bool, device=image.device)
        grid[:, pad : pad + k, pad : pad + k] = True
        inner = grid.flatten()
        # the frames at the requested positions (top-left corner (y, x) of the patch = of its frame)
        frames = padded[0].double().unfold(1, side, 1).unfold(2, side, 1)  # [C, nY, nX, side, side]
        frames = frames[:, ys, xs].permute(1, 0, 2, 3).reshape(len(ys), -1)  # [P, C*side*side]
        mu_i, cov_ii = mean[inner], cov[inner][:, inner]
        if self.sampler == "conditional":
            outer = ~inner
            cov_io, cov_oo = cov[inner][:, outer], cov[outer][:, outer]
            gain = torch.linalg.solve(cov_oo, cov_io.T).T  # [d, D - d]
            cond_mean = mu_i + (frames[:, outer] - mean[outer]) @ gain.T  # [P, d]
            cond_cov = cov_ii - gain @ cov_io.T
        else:
            cond_mean = mu_i.expand(len(ys), -1)
            cond_cov = cov_ii
        cond_cov = 0.5 * (cond_cov + cond_cov.T)
        eye = torch.eye(cond_cov.shape[0], dtype=cond_cov.dtype, device=cond_cov.device)
        chol, _ = torch.linalg.cholesky_ex(cond_cov + 1e-9 * cond_cov.diagonal().mean().clamp(min=1e-12) * eye)
        samples = cond_mean[:, None, :] + (z.double() @ chol.T)[None]  # [P, S, d]
        return samples.to(image.dtype).view(len(ys), z.shape[0], channels, k, k)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        _check_image(x, "PredictionDifference")
        batch, channels, height, width = x.shape
        pos_y, pos_x = (p.to(x.device) for p in self._positions((height, width)))
        if self.padding >= min(height, width):
            raise ValueError(f"PredictionDifference: padding {self.padding} must be smaller than the image sides.")
        outputs, resolved = _resolve(model, x, target)
        k, n_s = self.window, self.n_samples
        ys = pos_y.repeat_interleave(len(pos_x))
        xs = pos_x.repeat(len(pos_y))
        n_pos = len(ys)
        gen = generator(self.seed, x.device)
        z = torch.randn(n_s, channels * k * k, generator=gen, device=x.device, dtype=x.dtype)
        samples = torch.stack([self._conditional_samples(x[b], ys, xs, z) for b in range(batch)])  # [B,P,S,C,k,k]
        per_image = n_pos * n_s
        offs = torch.arange(k, device=x.device)

        def rows(sl: slice) -> Tensor:
            r = torch.arange(sl.start, sl.stop, device=x.device)
            b, rest = r // per_image, r % per_image
            p, s = rest // n_s, rest % n_s
            out = x[b].permute(0, 2, 3, 1).clone()  # [n, H, W, C]
            yy = (ys[p][:, None] + offs)[:, :, None]
            xx = (xs[p][:, None] + offs)[:, None, :]
            out[torch.arange(len(r), device=x.device)[:, None, None], yy, xx] = samples[b, p, s].permute(0, 2, 3, 1)
            return out.permute(0, 3, 1, 2)

        probs = evaluate_rows(
            model,
            rows,
            resolved.repeat_interleave(per_image),
            chunk_size=default_chunk_size(x, self.internal_batch_size),
            adaptive=self.internal_batch_size is None,
            score="softmax",
            progress=self.progress,
            desc="PredictionDifference",
            groups=[per_image] * batch,
        ).view(batch, n_pos, n_s)
        classes = outputs.shape[1]
        clean = target_scores(outputs, resolved, "softmax")

        def log_odds(prob: Tensor) -> Tensor:
            prob = (prob.double() * self.laplace_count + 1) / (self.laplace_count + classes)
            return torch.log2(prob) - torch.log2(1 - prob)

        evidence = (log_odds(clean)[:, None] - log_odds(probs.mean(dim=2))).to(x.dtype)  # [B, P]
        idx_y = torch.arange(height, device=x.device)
        idx_x = torch.arange(width, device=x.device)
        cover_y = ((idx_y >= pos_y[:, None]) & (idx_y < pos_y[:, None] + k)).to(x.dtype)  # [nY, H]
        cover_x = ((idx_x >= pos_x[:, None]) & (idx_x < pos_x[:, None] + k)).to(x.dtype)  # [nX, W]
        grid = evidence.view(batch, len(pos_y), len(pos_x))
        total = torch.einsum("bij,ih,jw->bhw", grid, cover_y, cover_x)
        count = cover_y.sum(0)[:, None] * cover_x.sum(0)[None, :]
        return (total / count).unsqueeze(1).expand(-1, channels, -1, -1).contiguous()


# --------------------------------------------------------------------------------------------
# counterfactual in-filling (FIDO)
# --------------------------------------------------------------------------------------------
class BlurInfiller(nn.Module):
    """In-filler: a Gaussian blur of the input (the mask is ignored).

    Examples:
        >>> BlurInfiller(2.0)(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, sigma: float = 5.0) -> None:
        super().__init__()
        self.sigma = check_float("sigma", sigma, 0.0)

    def forward(self, inputs: Tensor, keep: Tensor, noise: Tensor | None = None) -> Tensor:
        return smooth(inputs, self.sigma)


class LocalMeanInfiller(nn.Module):
    """In-filler: the mean of the *kept* pixels in a ``size x size`` box around each pixel
    (normalised convolution); where no pixel of the box is kept, the image's kept mean.

    Examples:
        >>> LocalMeanInfiller(3)(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, size: int = 7) -> None:
        super().__init__()
        self.size = check_int("size", size, 1)

    def forward(self, inputs: Tensor, keep: Tensor, noise: Tensor | None = None) -> Tensor:
        num = _box(inputs * keep, self.size)
        den = _box(keep.expand_as(inputs), self.size)
        fallback = (inputs * keep).flatten(2).sum(2) / keep.flatten(2).sum(2).clamp(min=1e-6)
        return torch.where(den > 1e-6, num / den.clamp(min=1e-6), fallback[..., None, None].expand_as(inputs))


class ConditionalGaussianInfiller(nn.Module):
    """In-filler: a sample of a Gaussian conditioned on the kept neighbourhood.

    Each pixel's mean and variance are the Gaussian-weighted (``sigma`` pixels) mean and
    variance of the *kept* pixels around it (normalised convolution), a local Gaussian model of
    the image conditioned on what the mask keeps; the in-fill is ``mean + std * noise`` with the
    standard-normal ``[C, H, W]`` ``noise`` the explainer draws (shared by every input of a
    batch), or the mean alone without ``noise``.

    Examples:
        >>> ConditionalGaussianInfiller(2.0)(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """

    def __init__(self, sigma: float = 3.0) -> None:
        super().__init__()
        self.sigma = check_float("sigma", sigma, 0.0)

    def forward(self, inputs: Tensor, keep: Tensor, noise: Tensor | None = None) -> Tensor:
        keep = keep.expand_as(inputs)
        weight = smooth(keep, self.sigma).clamp(min=1e-6)
        mean = smooth(inputs * keep, self.sigma) / weight
        if noise is None:
            return mean
        var = (smooth(inputs.square() * keep, self.sigma) / weight - mean.square()).clamp(min=0)
        return mean + (var + 1e-12).sqrt() * noise


INFILLERS: dict[str, type[nn.Module]] = {
    "blur": BlurInfiller,
    "mean": LocalMeanInfiller,
    "gaussian": ConditionalGaussianInfiller,
}
"""The in-fillers :class:`CounterfactualInfill` knows by name."""


class CounterfactualInfill(Explainer):
    """Counterfactual in-filling (FIDO; Chang, Creager, Goldenberg & Duvenaud 2019).

    A Concrete (relaxed Bernoulli, ``temperature``) keep-mask ``z`` with keep-probabilities
    ``pi = sigmoid(theta)`` at ``1 / mask_scale`` of the resolution, upsampled bilinearly, keeps
    the input where ``z = 1`` and takes the in-filler's output where ``z = 0``:
    ``x_z = z x + (1 - z) G(x, z)``. The in-filler ``G`` is ``"blur"``, ``"mean"`` (local mean of
    the kept pixels), ``"gaussian"`` (a Gaussian conditioned on the kept neighbourhood) or any
    ``nn.Module`` called as ``G(inputs [N, C, H, W], keep [N, 1, H, W]) -> [N, C, H, W]`` (a
    trained generative in-filler); its output shape is checked before the first forward pass.
    Objectives: ``"sdr"`` (smallest destroying region) minimises
    ``f_c(x_z) + l1_coeff * mean(1 - pi) + tv_coeff * TV(pi)`` and returns the drop probability
    ``1 - pi``; ``"ssr"`` (smallest sufficient region) minimises
    ``-f_c(x_z) + l1_coeff * mean(pi) + tv_coeff * TV(pi)`` and returns ``pi``. ``f_c`` is the
    target's log-probability by default. The Concrete noise comes from the private generator,
    one draw per step shared by every input of the batch.

    COST: ``n_iter`` forward + backward passes of the batch (gradients w.r.t. the mask logits
    only) plus the in-filler's cost.

    Args:
        infiller: ``"blur"``, ``"mean"``, ``"gaussian"`` or an ``nn.Module``.
        objective: ``"sdr"`` or ``"ssr"``.
        n_iter: Optimisation steps.
        lr: Adam learning rate.
        l1_coeff: Weight of the region size.
        tv_coeff: Weight of the total variation of ``pi``.
        temperature: Concrete temperature.
        mask_scale: Downsampling factor of the mask logits.
        score: ``"log_softmax"`` (default), ``"softmax"`` or ``"logit"``.
        seed: Seed of the private generator.
        internal_batch_size: Inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> CounterfactualInfill("mean", n_iter=5, mask_scale=2)(model, torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False
    OBJECTIVES: ClassVar[tuple[str, ...]] = ("sdr", "ssr")

    def __init__(
        self,
        infiller: str | nn.Module = "blur",
        objective: str = "sdr",
        n_iter: int = 200,
        lr: float = 0.1,
        l1_coeff: float = 0.05,
        tv_coeff: float = 0.1,
        temperature: float = 0.1,
        mask_scale: int = 4,
        score: str = "log_softmax",
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        if isinstance(infiller, str):
            if infiller not in INFILLERS:
                raise ValueError(
                    f"Expected argument `infiller` to be one of {list(INFILLERS)} or an nn.Module, but got {infiller!r}."
                )
        elif not isinstance(infiller, nn.Module):
            raise TypeError(
                f"Expected argument `infiller` to be a name or an nn.Module, but got {type(infiller).__name__}."
            )
        self.infiller = infiller
        if objective not in self.OBJECTIVES:
            raise ValueError(
                f"Expected argument `objective` to be one of {list(self.OBJECTIVES)}, but got {objective!r}."
            )
        self.objective = objective
        self.n_iter = check_int("n_iter", n_iter, 1)
        self.lr = check_float("lr", lr, 0.0)
        self.l1_coeff = check_float("l1_coeff", l1_coeff, 0.0)
        self.tv_coeff = check_float("tv_coeff", tv_coeff, 0.0)
        self.temperature = check_float("temperature", temperature, 0.0)
        if self.temperature == 0.0:
            raise ValueError("Expected argument `temperature` to be > 0, but got 0.0.")
        self.mask_scale = check_int("mask_scale", mask_scale, 1)
        self.score = check_score(score)
        self.seed = check_int("seed", seed, 0)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        _check_image(x, "CounterfactualInfill")
        size = (x.shape[-2], x.shape[-1])
        if self.mask_scale > max(size):
            raise ValueError(f"CounterfactualInfill: mask_scale {self.mask_scale} is larger than the image {size}.")
        infiller = INFILLERS[self.infiller]() if isinstance(self.infiller, str) else self.infiller
        shipped = isinstance(infiller, tuple(INFILLERS.values()))
        with observe(infiller) as _:
            with torch.no_grad():
                probe = infiller(x[:1], x.new_ones(1, 1, *size))
            if not isinstance(probe, Tensor) or probe.shape != x[:1].shape:
                got = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
                raise ValueError(
                    f"CounterfactualInfill: the in-filler must return a tensor of its input's shape {tuple(x[:1].shape)}, "
                    f"but returned {got}."
                )
            _, resolved = _resolve(model, x, target)
            gen = generator(self.seed, x.device)
            mask_shape = _mask_size(size, self.mask_scale)
            params = x.new_zeros(x.shape[0], 1, *mask_shape)
            sign = 1.0 if self.objective == "sdr" else -1.0
            state: dict[int, tuple[Tensor, Tensor]] = {}

            def noise(step: int) -> tuple[Tensor, Tensor]:
                if step not in state:  # one draw per step, shared by every chunk and input
                    state.clear()
                    u = torch.rand(1, 1, *mask_shape, generator=gen, device=x.device, dtype=x.dtype)
                    eps = torch.randn(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype)
                    state[step] = (u.clamp(1e-6, 1 - 1e-6), eps)
                return state[step]

            def loss(p: Tensor, rows: slice, step: int) -> Tensor:
                u, eps = noise(step)
                z = torch.sigmoid((p + torch.log(u) - torch.log1p(-u)) / self.temperature)
                keep = _upsample(z, size)
                xs = x[rows]
                filled = infiller(xs, keep, noise=eps) if shipped else infiller(xs, keep)
                s = target_scores(model(keep * xs + (1 - keep) * filled), resolved[rows], self.score)
                pi = torch.sigmoid(p)
                region = (1 - pi) if self.objective == "sdr" else pi
                return sign * s + self.l1_coeff * region.flatten(1).mean(1) + self.tv_coeff * _total_variation(pi, 2.0)

            params = _adam(
                params,
                loss,
                n_iter=self.n_iter,
                lr=self.lr,
                chunk_size=default_chunk_size(x, self.internal_batch_size),
                adaptive=self.internal_batch_size is None,
                project=None,
                progress=self.progress,
                desc="CounterfactualInfill",
            )
        pi = _upsample(torch.sigmoid(params), size)
        return 1 - pi if self.objective == "sdr" else pi
