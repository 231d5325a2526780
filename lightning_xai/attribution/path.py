"""Path methods: Integrated Gradients and its baselines.

:class:`IntegratedGradients` (Sundararajan et al. 2017) integrates the gradient of the target
score along the straight line from a baseline ``x'`` to the input ``x``:

    IG_i(x) = (x_i - x'_i) * integral_0^1 dS_c(x' + a (x - x')) / dx_i da

with captum's quadrature rules, and a choice of baselines: zero ("black"), a blurred copy of the
input, Gaussian noise around the input, uniform noise, a user tensor or callable, or a list of
these whose attributions are averaged (Kapishnikov et al. 2019, Sturmfels et al. 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_bool, check_float, check_int
from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    OutputType,
    TargetType,
    accumulation_dtype,
    chunks,
    default_chunk_rows,
    input_gradient,
    resolve_target,
    run_chunked,
    select_scores,
    target_indices,
    targets_checked,
    value_bounds,
)

__all__ = [
    "BASELINE_KINDS",
    "BaselineType",
    "INTEGRATION_METHODS",
    "IntegratedGradients",
    "gaussian_blur",
    "make_baseline",
    "quadrature",
]

BASELINE_KINDS = ("zero", "blur", "gaussian", "uniform")
"""The named baselines :class:`IntegratedGradients` and :func:`make_baseline` accept."""

INTEGRATION_METHODS = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid", "gausslegendre")
"""captum's names for the quadrature rules of :func:`quadrature`."""

SingleBaseline = Union[str, Tensor, Callable[[Tensor], Tensor]]
BaselineType = Union[SingleBaseline, Sequence[SingleBaseline]]
"""A baseline kind from :data:`BASELINE_KINDS`, a tensor broadcastable to the inputs, a callable
``inputs -> baseline``, or a list of these (attributions averaged over the baselines)."""


# --------------------------------------------------------------------------------------------
# quadrature
# --------------------------------------------------------------------------------------------
def quadrature(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Step sizes (weights) and alphas in ``[0, 1]`` of a quadrature rule on ``[0, 1]``.

    The same rules as captum's ``approximation_parameters`` with one exception:
    ``riemann_trapezoid`` here is the trapezoid rule on ``n_steps`` equally spaced points
    (spacing ``1 / (n_steps - 1)``, end weights halved: the weights sum to 1). captum uses the
    same points with weights ``1 / n_steps`` (halved at the ends), which sum to
    ``1 - 1 / n_steps``, so its ``riemann_trapezoid`` attributions are ours times
    ``(n_steps - 1) / n_steps`` and miss completeness by that factor.

    Args:
        method: One of :data:`INTEGRATION_METHODS`.
        n_steps: Number of points (at least 2 for ``riemann_trapezoid``).

    Returns:
        ``(step_sizes, alphas)``, two float64 arrays of length ``n_steps``.

    Raises:
        ValueError: unknown ``method`` or too few steps.

    Examples:
        >>> quadrature("riemann_left", 4)[1].tolist()
        [0.0, 0.25, 0.5, 0.75]
    """
    _check_method(method, n_steps)
    k = np.arange(n_steps, dtype=np.float64)
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n_steps)
        return 0.5 * weights, 0.5 * (nodes + 1.0)
    if method == "riemann_trapezoid":
        h = 1.0 / (n_steps - 1)
        weights = np.full(n_steps, h)
        weights[0] /= 2
        weights[-1] /= 2
        return weights, k * h
    weights = np.full(n_steps, 1.0 / n_steps)
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return weights, (k + offset) / n_steps


def _check_method(method: Any, n_steps: Any) -> None:
    if method not in INTEGRATION_METHODS:
        raise ValueError(f"Expected argument `method` to be one of {list(INTEGRATION_METHODS)}, but got {method!r}.")
    check_int("n_steps", n_steps, 1)
    if method == "riemann_trapezoid" and n_steps < 2:
        raise ValueError(
            f"Expected argument `n_steps` to be an int >= 2 for method 'riemann_trapezoid', but got {n_steps!r}."
        )


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------
def gaussian_blur(inputs: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Gaussian blur over every spatial dimension (all dimensions after ``[B, C]``).

    Separable, with the kernel truncated at ``truncate * sigma`` and edges extended by their
    nearest value: the same as ``scipy.ndimage.gaussian_filter(x, (0, 0, sigma, ...),
    mode="nearest", truncate=truncate)``.

    Args:
        inputs: ``[B, C, *spatial]`` tensor with at least one spatial dimension.
        sigma: Standard deviation in pixels; ``0`` returns a copy.
        truncate: Kernel radius in standard deviations.

    Returns:
        The blurred tensor, same shape, dtype and device.

    Raises:
        ValueError: ``inputs`` has no spatial dimension or ``sigma`` is negative.

    Examples:
        >>> gaussian_blur(torch.rand(1, 3, 8, 8), sigma=2.0).shape
        torch.Size([1, 3, 8, 8])
    """
    if inputs.ndim < 3:
        raise ValueError(f"The blur baseline needs [B, C, *spatial] inputs, but got shape {tuple(inputs.shape)}.")
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"Expected argument `sigma` to be a finite float >= 0, but got {sigma!r}.")
    out = inputs.detach().clone()
    if sigma == 0:
        return out
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=inputs.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(inputs.dtype).view(1, 1, -1)
    for dim in range(2, inputs.ndim):
        moved = out.movedim(dim, -1)
        shape = moved.shape
        lines = moved.reshape(-1, 1, shape[-1])
        lines = F.pad(lines, (radius, radius), mode="replicate")
        out = F.conv1d(lines, kernel).reshape(shape).movedim(-1, dim)
    return out.contiguous()


def make_baseline(
    spec: SingleBaseline,
    inputs: Tensor,
    *,
    blur_sigma: float = 5.0,
    noise_std: float = 0.15,
    seed: int = 0,
) -> Tensor:
    """One baseline for ``inputs``, of the same shape, dtype and device.

    * ``"zero"``: all zeros.
    * ``"blur"``: :func:`gaussian_blur` of the input with ``blur_sigma``.
    * ``"gaussian"``: ``x + noise_std * (max(x) - min(x)) * z``, ``z`` standard normal (per sample
      range; not clipped).
    * ``"uniform"``: uniform noise in each input's ``[min(x), max(x)]``.
    * a tensor: broadcast to the inputs' shape.
    * a callable: ``spec(inputs)``, broadcast to the inputs' shape.

    Noise comes from a private generator seeded with ``seed`` on the inputs' device; each input in
    the batch gets the same standard draws (scaled to its own range), so a baseline does not depend
    on the batch the input comes in, and the global RNG is untouched.

    Args:
        spec: The baseline kind, tensor or callable.
        inputs: The ``[B, ...]`` inputs.
        blur_sigma: Standard deviation of the blur, in pixels.
        noise_std: Standard deviation of the Gaussian noise, a fraction of each input's range.
        seed: Seed of the noise generator.

    Returns:
        The baseline, detached.

    Raises:
        ValueError: unknown kind, or a tensor / callable result that does not broadcast.
        TypeError: ``spec`` is of an unsupported type, or a callable returned no tensor.

    Examples:
        >>> make_baseline("uniform", torch.rand(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])
    """
    x = inputs.detach()
    if isinstance(spec, str):
        if spec == "zero":
            return torch.zeros_like(x)
        if spec == "blur":
            return gaussian_blur(x, blur_sigma)
        if spec in ("gaussian", "uniform"):
            gen = torch.Generator(device=x.device).manual_seed(seed)
            low, spread = value_bounds(x)
            if spec == "gaussian":
                z = torch.randn(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype)
                return x + noise_std * spread * z
            u = torch.rand(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype)
            return low + spread * u
        raise ValueError(f"Expected a baseline kind in {list(BASELINE_KINDS)}, but got {spec!r}.")
    if isinstance(spec, Tensor):
        value, what = spec, "baseline tensor"
    elif callable(spec):
        with torch.no_grad():
            value = spec(x.clone())
        what = "baseline callable's result"
        if not isinstance(value, Tensor):
            raise TypeError(f"Expected the baseline callable to return a Tensor, but got {type(value).__name__}.")
    else:
        raise TypeError(f"Expected a baseline kind, a Tensor or a callable, but got {type(spec).__name__}.")
    value = value.detach().to(device=x.device, dtype=x.dtype)
    try:
        return torch.broadcast_to(value, x.shape).clone()
    except RuntimeError:
        raise ValueError(
            f"The {what} of shape {tuple(value.shape)} does not broadcast to the inputs' shape {tuple(x.shape)}."
        ) from None


def _check_baseline(baseline: Any) -> None:
    items = list(baseline) if isinstance(baseline, (list, tuple)) else [baseline]
    if not items:
        raise ValueError("Expected argument `baseline` to hold at least one baseline, but got an empty list.")
    for item in items:
        if isinstance(item, str):
            if item not in BASELINE_KINDS:
                raise ValueError(
                    f"Expected argument `baseline` to be one of {list(BASELINE_KINDS)}, a Tensor, a callable "
                    f"or a list of these, but got {item!r}."
                )
        elif isinstance(item, Tensor):
            if not item.is_floating_point():
                raise TypeError(f"Expected a floating-point baseline tensor, but got dtype {item.dtype}.")
        elif not callable(item):
            raise TypeError(
                "Expected argument `baseline` to be a baseline kind, a Tensor, a callable or a list of these, "
                f"but got {type(item).__name__}."
            )


# --------------------------------------------------------------------------------------------
# Integrated Gradients
# --------------------------------------------------------------------------------------------
class IntegratedGradients(Explainer):
    """Integrated Gradients (Sundararajan et al. 2017), as captum ``IntegratedGradients``.

    ``IG(x) = (x - x') * sum_k w_k dS_c(x' + a_k (x - x'))/dx`` with the quadrature weights
    ``w_k`` and points ``a_k`` of :func:`quadrature` (captum's rules; ``riemann_trapezoid`` is the
    correct trapezoid rule, see there). All ``n_steps * B`` path points (times the number of
    baselines) go through the model in chunks of at most ``internal_batch_size`` points; the
    default keeps a chunk at most :data:`~lightning_xai.attribution.base.DEFAULT_CHUNK_ELEMENTS`
    (``2**22``) input elements (``2**22 // numel(x_i)`` points, at least 1: 27 images at
    3 x 224 x 224), which keeps resnet50 at 224 x 224 under 3 GiB; the default halves itself, with
    a warning, when the device runs out of memory. The path sum accumulates in float32 also for a
    bf16/fp16 model (its completeness error stays that of the model's own rounding). With a list of baselines the attributions are the mean of the
    attributions for each baseline (Kapishnikov et al. 2019). ``target=None`` explains the
    predicted class of the clean input.

    COST: 1 forward pass of the batch + ``n_steps * len(baselines)`` forward + backward passes of
    the batch, in ``ceil(n_steps * len(baselines) * B / internal_batch_size)`` chunks;
    :meth:`with_delta` adds a forward pass of the baselines.

    Args:
        n_steps: Number of quadrature points.
        method: One of :data:`INTEGRATION_METHODS`.
        baseline: ``"zero"``, ``"blur"``, ``"gaussian"``, ``"uniform"``, a tensor broadcastable to
            the inputs, a callable ``inputs -> baseline``, or a list of these (see
            :func:`make_baseline`).
        internal_batch_size: Most path points per forward/backward pass (``None``: the bound
            above, adaptive on out-of-memory). A value you pass is used as is: out-of-memory
            then raises ``torch.OutOfMemoryError`` naming this argument.
        multiply_by_inputs: Multiply the integrated gradient by ``x - x'`` (the default, IG);
            ``False`` returns the path-averaged gradient alone (captum's "global" attribution).
        blur_sigma: Standard deviation, in pixels, of the ``"blur"`` baseline.
        noise_std: Standard deviation of the ``"gaussian"`` baseline, a fraction of each input's
            ``max - min``.
        seed: Seed of the private generator for the noise baselines; the ``j``-th entry of a list
            uses ``seed + j`` so that two noise baselines in a list differ.

    Raises:
        ValueError: an out-of-range ``n_steps``, ``internal_batch_size``, ``blur_sigma`` or
            ``noise_std``, or an unknown ``method`` or ``baseline`` kind.
        TypeError: an argument of the wrong type (``seed=1.5``, a baseline of an unsupported
            type, ``multiply_by_inputs`` not a bool).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> ig = IntegratedGradients(n_steps=16, baseline=["zero", "blur"])
        >>> attributions, delta = ig.with_delta(model, torch.rand(2, 3, 2, 2), target=1)
        >>> attributions.shape, delta.shape
        (torch.Size([2, 3, 2, 2]), torch.Size([2]))
    """

    def __init__(
        self,
        n_steps: int = 50,
        method: str = "gausslegendre",
        baseline: BaselineType = "zero",
        internal_batch_size: int | None = None,
        multiply_by_inputs: bool = True,
        blur_sigma: float = 5.0,
        noise_std: float = 0.15,
        seed: int = 0,
    ) -> None:
        _check_method(method, n_steps)
        _check_baseline(baseline)
        check_int("internal_batch_size", internal_batch_size, 1, allow_none=True)
        check_bool("multiply_by_inputs", multiply_by_inputs)
        check_float("blur_sigma", blur_sigma, 0.0)
        check_float("noise_std", noise_std, 0.0)
        check_int("seed", seed)
        self.n_steps = n_steps
        self.method = method
        self.baseline = list(baseline) if isinstance(baseline, tuple) else baseline
        self.internal_batch_size = internal_batch_size
        self.multiply_by_inputs = multiply_by_inputs
        self.blur_sigma = float(blur_sigma)
        self.noise_std = float(noise_std)
        self.seed = seed

    def baselines(self, inputs: Tensor) -> Tensor:
        """The baselines this explainer integrates from: ``[len(baselines), B, ...]``.

        Args:
            inputs: The ``[B, ...]`` inputs.

        Returns:
            The stacked baselines (a single baseline gives a leading dimension of 1).
        """
        specs = self.baseline if isinstance(self.baseline, list) else [self.baseline]
        return torch.stack(
            [
                make_baseline(spec, inputs, blur_sigma=self.blur_sigma, noise_std=self.noise_std, seed=self.seed + j)
                for j, spec in enumerate(specs)
            ]
        )

    def with_delta(
        self, model: nn.Module, inputs: Tensor, target: TargetType = None, *, output: OutputType = None
    ) -> tuple[Tensor, Tensor]:
        """Attributions and their completeness error.

        ``delta_i = sum(IG(x_i)) - (S_c(x_i) - S_c(x'_i))``, which tends to 0 as ``n_steps`` grows
        for a model differentiable along the path. With a list of baselines it is the mean of the
        per-baseline deltas (equivalently ``sum(mean IG) - (S_c(x) - mean_j S_c(x'_j))``). The
        delta always measures the multiplied attributions ``(x - x') * integrated gradient``, also
        when ``multiply_by_inputs=False``.

        Args:
            model: Any ``nn.Module`` mapping ``[B, ...]`` inputs to ``[B, C]`` scores.
            inputs: A ``[B, ...]`` batch.
            target: Class to explain: ``int``, ``[B]`` tensor, or ``None`` for the predicted class.
            output: Where the scores are in the model's output (see ``Explainer.__call__``).

        Returns:
            ``(attributions, delta)``: input-shaped attributions and a ``[B]`` delta, detached, on
            the model's device.
        """
        result: tuple[Tensor, Tensor] = self._run(
            model, inputs, lambda x, ctx: self._integrate(model, x, target, ctx, with_delta=True), output=output
        )
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        attributions, _ = self._integrate(model, inputs, target, ctx, with_delta=False)
        return attributions

    def _chunk_rows(self, inputs: Tensor) -> int:
        if self.internal_batch_size is not None:
            return self.internal_batch_size
        return default_chunk_rows(inputs)

    def _integrate(
        self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext, *, with_delta: bool
    ) -> tuple[Tensor, Tensor | None]:
        x = inputs.detach()
        batch = x.shape[0]
        acc = accumulation_dtype(x.dtype)  # path sums in float32 for a bf16/fp16 model
        clean: Tensor | None = None
        if target is None or with_delta:
            with torch.no_grad():
                clean = model(x)
            resolved = resolve_target(target, clean)
        else:  # the class range is checked once, by the first chunk's forward pass
            resolved = target_indices(target, batch, x.device)
        x_acc = x.to(acc)
        baselines = self.baselines(x_acc)  # [J, B, ...]
        n_base = baselines.shape[0]
        steps_np, alphas_np = quadrature(self.method, self.n_steps)
        steps = torch.as_tensor(steps_np, dtype=acc, device=x.device)
        alphas = torch.as_tensor(alphas_np, dtype=acc, device=x.device)
        flat_base = baselines.flatten(0, 1)  # row j * B + i
        ones = [1] * (x.ndim - 1)
        totals = torch.zeros_like(flat_base)

        def body(rows: slice) -> None:
            # path point row r = (j * n_steps + k) * B + i: baseline j, step k, input i
            r = torch.arange(rows.start, rows.stop, device=x.device)
            i = r % batch
            jk = r // batch
            k = jk % self.n_steps
            slot = (jk // self.n_steps) * batch + i
            start = flat_base[slot]
            points = ctx.prepare(start + alphas[k].view(-1, *ones) * (x_acc[i] - start))
            grad, _ = input_gradient(model, points, resolved[i])
            totals.index_add_(0, slot, grad.detach().to(acc) * steps[k].view(-1, *ones))

        size = self._chunk_rows(x)
        with targets_checked(clean is not None):  # resolved above: no check per chunk
            run_chunked(
                n_base * self.n_steps * batch,
                size,
                body,
                method=type(self).__name__,
                adaptive=self.internal_batch_size is None,
            )
        totals = totals.view_as(baselines)
        multiplied = totals * (x_acc.unsqueeze(0) - baselines)
        attributions = (multiplied if self.multiply_by_inputs else totals).mean(dim=0)
        if not with_delta:
            return attributions, None
        with torch.no_grad():
            base_scores = torch.cat(
                [
                    select_scores(model(ctx.prepare(flat_base[rows]).detach()), resolved.repeat(n_base)[rows])
                    for rows in chunks(n_base * batch, size)
                ]
            ).view(n_base, batch)
        assert clean is not None
        clean_scores = select_scores(clean, resolved)
        delta = multiplied.flatten(2).sum(dim=2) - (clean_scores.to(acc).unsqueeze(0) - base_scores.to(acc))
        return attributions, delta.mean(dim=0)
