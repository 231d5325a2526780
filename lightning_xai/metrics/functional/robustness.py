"""Robustness: does the map stay put when the input barely moves?

* :func:`local_lipschitz` (Alvarez-Melis & Jaakkola 2018): ``max ||E(x) - E(x')|| / ||x - x'||``
  over Gaussian neighbours ``x'``.
* :func:`max_sensitivity` (Yeh et al. 2019): ``max ||E(x) - E(x')|| / ||E(x)||`` over uniform
  neighbours in an L-infinity ball.
* :func:`fragility` (Ghorbani, Abid & Zou 2019): a label-preserving attack inside an
  L-infinity ball that moves the map, scored by top-k intersection and centre-of-mass shift.

Each calls the explainer on batches of perturbed inputs (all samples of a chunk at once, never
one perturbation per call), with noise from a private seeded generator.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType, observe
from lightning_xai.metrics.functional._common import (
    ExplainFn,
    check_batch,
    check_finite,
    explain_batched,
    generator_for,
    resolve,
)

__all__ = ["local_lipschitz", "max_sensitivity", "fragility", "FragilityResult", "center_of_mass", "topk_mask"]


def _check_explainer(explainer: object, method: str) -> None:
    if not callable(explainer):
        raise TypeError(
            f"{method}: expected `explainer` to be callable as explainer(model, inputs, target), "
            f"but got {type(explainer).__name__}."
        )


def _neighbour_maps(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType,
    attributions: Tensor | None,
    noise: Tensor,
    batch_size: int | None,
    method: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(x [B, ...], maps [B, ...], neighbour maps [S, B, ...])`` for ``x + noise``."""
    x, tgt = resolve(model, inputs, target)
    if attributions is None:
        maps = explain_batched(explainer, model, x, tgt, batch_size, method=method)
    else:
        maps = check_finite("attributions", attributions.detach().to(x.device), method=method)
        if maps.shape[0] != x.shape[0]:
            raise ValueError(f"{method}: `attributions` {tuple(maps.shape)} do not match the inputs {tuple(x.shape)}.")
    s = noise.shape[0]
    xp = (x.unsqueeze(0) + noise).reshape(-1, *x.shape[1:])
    neighbours = explain_batched(explainer, model, xp, tgt.repeat(s), batch_size, method=method)
    return x, maps, neighbours.view(s, *maps.shape)


def _draw(
    noise: Tensor | None,
    samples: int,
    x_shape: torch.Size,
    inputs: Tensor,
    seed: int,
    kind: str,
    scale: float,
    method: str,
) -> Tensor:
    if noise is not None:
        if noise.ndim != len(x_shape) + 1 or noise.shape[1:] != x_shape:
            raise ValueError(
                f"{method}: expected `noise` of shape [samples, {', '.join(map(str, x_shape))}], "
                f"but got {tuple(noise.shape)}."
            )
        return noise.detach()
    device = inputs.device
    gen = generator_for(seed, device)
    if kind == "gaussian":
        return torch.randn(samples, *x_shape, generator=gen, device=device, dtype=inputs.dtype) * scale
    return (torch.rand(samples, *x_shape, generator=gen, device=device, dtype=inputs.dtype) * 2 - 1) * scale


def _local_lipschitz_update(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    attributions: Tensor | None = None,
    samples: int = 10,
    std: float = 0.1,
    seed: int = 0,
    noise: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    method = "local_lipschitz"
    _check_explainer(explainer, method)
    check_int("samples", samples, 1)
    check_float("std", std, 0.0)
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    noise = _draw(noise, samples, inputs.shape, inputs, seed, "gaussian", std, method)
    x, maps, neighbours = _neighbour_maps(model, inputs, explainer, target, attributions, noise.to(inputs.device),
                                          batch_size, method)  # fmt: skip
    num = (neighbours - maps.unsqueeze(0)).flatten(2).to(torch.float64).norm(dim=2)  # [S, B]
    den = noise.to(x.device).flatten(2).to(torch.float64).norm(dim=2)
    return (num / den).amax(dim=0).to(inputs.dtype)


def local_lipschitz(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    attributions: Tensor | None = None,
    samples: int = 10,
    std: float = 0.1,
    seed: int = 0,
    noise: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018): the largest
    ``||E(x) - E(x')||_2 / ||x - x'||_2`` over ``samples`` neighbours ``x' = x + N(0, std^2)``.

    Lower is better (a stable explainer). Same estimate as quantus ``LocalLipschitzEstimate``
    (with ``normalise=False``) for the same noise. Cost: one explainer call on ``samples * B``
    inputs (in chunks of ``batch_size``), plus one for ``E(x)`` unless ``attributions`` are given.

    Args:
        model: Maps ``[B, ...]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``, e.g. ``Saliency()``.
        target: Class per input, kept for every neighbour; ``None`` for the prediction at ``x``.
        attributions: ``E(x)`` if already computed.
        samples: Number of neighbours.
        std: Standard deviation of the Gaussian noise.
        seed: Seed of the private generator.
        noise: Optional ``[samples, B, C, H, W]`` noise to use instead of drawing.
        batch_size: Most inputs per explainer call (``None``: all neighbours at once).

    Returns:
        ``[B]`` estimates.

    Raises:
        LightningXAIError: The explainer returns NaN or infinity.

    Example:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> # a linear model's (absolute) gradient does not depend on the input
        >>> local_lipschitz(model, torch.rand(2, 1, 4, 4), Saliency(), samples=4)
        tensor([0., 0.])
    """
    return _local_lipschitz_update(
        model, inputs, explainer, target, attributions=attributions, samples=samples, std=std, seed=seed,
        noise=noise, batch_size=batch_size,
    )  # fmt: skip


def _max_sensitivity_update(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    attributions: Tensor | None = None,
    samples: int = 10,
    radius: float = 0.2,
    seed: int = 0,
    noise: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    method = "max_sensitivity"
    _check_explainer(explainer, method)
    check_int("samples", samples, 1)
    check_float("radius", radius, 0.0)
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    noise = _draw(noise, samples, inputs.shape, inputs, seed, "uniform", radius, method)
    _, maps, neighbours = _neighbour_maps(model, inputs, explainer, target, attributions, noise.to(inputs.device),
                                          batch_size, method)  # fmt: skip
    num = (neighbours - maps.unsqueeze(0)).flatten(2).to(torch.float64).norm(dim=2)  # [S, B]
    den = maps.flatten(1).to(torch.float64).norm(dim=1)
    return (num / den).amax(dim=0).to(inputs.dtype)


def max_sensitivity(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    attributions: Tensor | None = None,
    samples: int = 10,
    radius: float = 0.2,
    seed: int = 0,
    noise: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Max-sensitivity (Yeh et al. 2019): the largest relative change ``||E(x) - E(x')|| / ||E(x)||``
    over ``samples`` neighbours ``x' = x + U(-radius, radius)``.

    Lower is better. Same estimate as quantus ``MaxSensitivity`` (``normalise=False``) for the same
    noise. Cost: as :func:`local_lipschitz`.

    Args:
        model: Maps ``[B, ...]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``.
        target: Class per input; ``None`` for the prediction at ``x``.
        attributions: ``E(x)`` if already computed.
        samples: Number of neighbours.
        radius: Half-width of the uniform noise.
        seed: Seed of the private generator.
        noise: Optional ``[samples, B, C, H, W]`` noise to use instead of drawing.
        batch_size: Most inputs per explainer call.

    Returns:
        ``[B]`` sensitivities (NaN where ``E(x)`` is all zero).

    Example:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> max_sensitivity(model, torch.rand(2, 1, 4, 4), Saliency(), samples=4)
        tensor([0., 0.])
    """
    return _max_sensitivity_update(
        model, inputs, explainer, target, attributions=attributions, samples=samples, radius=radius,
        seed=seed, noise=noise, batch_size=batch_size,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# fragility
# ---------------------------------------------------------------------------------------------
class FragilityResult(NamedTuple):
    """What :func:`fragility` returns, per sample."""

    topk_intersection: Tensor
    """``[B]`` share of the original top-k pixels still in the attacked map's top-k (1: unmoved)."""
    center_shift: Tensor
    """``[B]`` distance in pixels between the centres of mass of ``|map|`` before and after."""


def topk_mask(maps: Tensor, k: int) -> Tensor:
    """``[B, H*W]`` boolean mask of the ``k`` pixels with the largest ``|map|`` (channels summed)."""
    energy = maps.detach().abs().sum(dim=1).flatten(1)
    idx = energy.topk(k, dim=1).indices
    return torch.zeros_like(energy, dtype=torch.bool).scatter_(1, idx, True)


def center_of_mass(maps: Tensor) -> Tensor:
    """``[B, 2]`` (row, column) centre of mass of ``|map|`` (channels summed); the image centre
    for an all-zero map.

    Example:
        >>> m = torch.zeros(1, 1, 3, 3); m[0, 0, 2, 0] = 1
        >>> center_of_mass(m)
        tensor([[2., 0.]])
    """
    energy = maps.detach().abs().sum(dim=1).to(torch.float64)  # [B, H, W]
    h, w = energy.shape[-2:]
    total = energy.flatten(1).sum(dim=1)
    rows = torch.arange(h, device=energy.device, dtype=energy.dtype)
    cols = torch.arange(w, device=energy.device, dtype=energy.dtype)
    r = (energy.sum(dim=2) * rows).sum(dim=1) / total.clamp_min(1e-300)
    c = (energy.sum(dim=1) * cols).sum(dim=1) / total.clamp_min(1e-300)
    centre = torch.stack([r, c], dim=1)
    middle = torch.tensor([(h - 1) / 2, (w - 1) / 2], dtype=energy.dtype, device=energy.device)
    return torch.where((total > 0).unsqueeze(1), centre, middle).to(maps.dtype)


def _fragility_update(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    epsilon: float = 8 / 255,
    iterations: int = 8,
    candidates: int = 8,
    k: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
) -> FragilityResult:
    method = "fragility"
    _check_explainer(explainer, method)
    check_float("epsilon", epsilon, 0.0)
    check_int("iterations", iterations, 1)
    check_int("candidates", candidates, 1)
    k = check_float("k", k, 0.0, 1.0)
    if not 0.0 < k < 1.0:
        raise ValueError(f"{method}: expected argument `k` to be a fraction in (0, 1), but got {k}.")
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    b = x.shape[0]
    with observe(model), torch.no_grad():
        label = model(x).argmax(dim=1)
    maps = explain_batched(explainer, model, x, tgt, batch_size, method=method)
    n_top = max(1, round(k * maps.shape[-2] * maps.shape[-1]))
    top0 = topk_mask(maps, n_top)
    com0 = center_of_mass(maps)
    gen = generator_for(seed, x.device)
    delta = torch.zeros_like(x)
    best = torch.ones(b, dtype=torch.float64, device=x.device)
    best_maps = maps
    step = epsilon / max(1, iterations // 2)
    for _ in range(iterations):
        # candidates random-sign steps from the current perturbation, projected into the ball
        signs = torch.randint(0, 2, (candidates, *x.shape), generator=gen, device=x.device).to(x.dtype) * 2 - 1
        cand = (delta.unsqueeze(0) + step * signs).clamp(-epsilon, epsilon)  # [K, B, ...]
        xp = (x.unsqueeze(0) + cand).reshape(-1, *x.shape[1:])
        with observe(model), torch.no_grad():
            kept = (model(xp).argmax(dim=1) == label.repeat(candidates)).view(candidates, b)
        cand_maps = explain_batched(explainer, model, xp, tgt.repeat(candidates), batch_size, method=method)
        cand_maps = cand_maps.view(candidates, *maps.shape)
        inter = (topk_mask(cand_maps.flatten(0, 1), n_top).view(candidates, b, -1) & top0).sum(dim=2)
        inter = (inter.to(torch.float64) / n_top).masked_fill(~kept, 2.0)  # a flipped label never wins
        value, pick = inter.min(dim=0)
        better = value < best
        idx = torch.arange(b, device=x.device)
        delta = torch.where(better.view(-1, *[1] * (x.ndim - 1)), cand[pick, idx], delta)
        best_maps = torch.where(better.view(-1, *[1] * (maps.ndim - 1)), cand_maps[pick, idx], best_maps)
        best = torch.where(better, value, best)
    shift = (center_of_mass(best_maps) - com0).to(torch.float64).norm(dim=1)
    return FragilityResult(best.to(x.dtype), shift.to(x.dtype))


def fragility(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    epsilon: float = 8 / 255,
    iterations: int = 8,
    candidates: int = 8,
    k: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
) -> FragilityResult:
    """Fragility (Ghorbani, Abid & Zou 2019): how far a small, label-preserving perturbation can
    move the map.

    The attack is a batched random search (the paper's iterative attack without second-order
    gradients, which ReLU networks lack): at each of ``iterations`` steps, ``candidates``
    random-sign steps from the current perturbation are projected into the L-infinity ball of
    radius ``epsilon``; the candidate whose map keeps the fewest of the original top-k pixels
    while the predicted label stays the same is kept. Cost: ``iterations`` explainer calls and
    forwards on ``candidates * B`` inputs.

    Args:
        model: Maps ``[B, ...]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``.
        target: Class explained; ``None`` for the prediction at ``x``.
        epsilon: L-infinity radius of the perturbation.
        iterations: Attack steps.
        candidates: Random candidates per step.
        k: Fraction of pixels in the top-k set, in ``(0, 1)``.
        seed: Seed of the private generator.
        batch_size: Most inputs per explainer call.

    Returns:
        A :class:`FragilityResult` of ``[B]`` top-k intersections (lower: more fragile) and
        centre-of-mass shifts in pixels (higher: more fragile).

    Example:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> fragility(model, torch.rand(2, 1, 4, 4), Saliency(), iterations=2).topk_intersection
        tensor([1., 1.])
    """
    return _fragility_update(
        model, inputs, explainer, target, epsilon=epsilon, iterations=iterations, candidates=candidates,
        k=k, seed=seed, batch_size=batch_size,
    )  # fmt: skip
