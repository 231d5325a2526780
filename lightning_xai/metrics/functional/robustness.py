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

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType, observe, select_scores
from lightning_xai.attribution.gradient import ModifiedReLU
from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics.functional._common import (
    ExplainFn,
    check_batch,
    check_explainer,
    explain_batched,
    generator_for,
    given_or_explained,
    resolve,
)

__all__ = [
    "local_lipschitz",
    "max_sensitivity",
    "fragility",
    "FragilityResult",
    "center_of_mass",
    "topk_mask",
    "ATTACKS",
    "AttackMapFn",
    "default_attack_map",
    "softplus_twin",
]


def _map_changes(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType,
    attributions: Tensor | None,
    noise: Tensor,
    batch_size: int | None,
    method: str,
) -> tuple[Tensor, Tensor]:
    """``(maps E(x) [B, ...], ||E(x + noise_s) - E(x)||_2 [S, B] in float64)``."""
    x, tgt = resolve(model, inputs, target)
    maps = given_or_explained(explainer, model, x, tgt, attributions, batch_size, method)
    if maps.shape[0] != x.shape[0]:
        raise ValueError(f"{method}: `attributions` {tuple(maps.shape)} do not match the inputs {tuple(x.shape)}.")
    s = noise.shape[0]
    xp = (x.unsqueeze(0) + noise.to(x.device)).reshape(-1, *x.shape[1:])
    neighbours = explain_batched(explainer, model, xp, tgt.repeat(s), batch_size, method=method)
    changes = (neighbours.view(s, *maps.shape) - maps.unsqueeze(0)).flatten(2).to(torch.float64).norm(dim=2)
    return maps, changes


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

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> # a linear model's (absolute) gradient does not depend on the input
        >>> local_lipschitz(model, torch.rand(2, 1, 4, 4), Saliency(), samples=4)
        tensor([0., 0.])
    """
    method = "local_lipschitz"
    check_explainer(explainer, method)
    check_int("samples", samples, 1)
    check_float("std", std, 0.0)
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    noise = _draw(noise, samples, inputs.shape, inputs, seed, "gaussian", std, method)
    maps, changes = _map_changes(model, inputs, explainer, target, attributions, noise, batch_size, method)
    distances = noise.to(maps.device).flatten(2).to(torch.float64).norm(dim=2)
    return (changes / distances).amax(dim=0).to(inputs.dtype)


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

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> max_sensitivity(model, torch.rand(2, 1, 4, 4), Saliency(), samples=4)
        tensor([0., 0.])
    """
    method = "max_sensitivity"
    check_explainer(explainer, method)
    check_int("samples", samples, 1)
    check_float("radius", radius, 0.0)
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    noise = _draw(noise, samples, inputs.shape, inputs, seed, "uniform", radius, method)
    maps, changes = _map_changes(model, inputs, explainer, target, attributions, noise, batch_size, method)
    return (changes / maps.flatten(1).to(torch.float64).norm(dim=1)).amax(dim=0).to(inputs.dtype)


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

    Examples:
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


ATTACKS = ("topk", "center_mass", "random")
"""The ``attack`` names :func:`fragility` accepts."""

AttackMapFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""``attack_map(model, inputs, target) -> maps`` differentiable with respect to ``inputs`` (a
gradient map built with ``create_graph=True``): what the gradient attack differentiates."""


class _SoftplusReLU(ModifiedReLU):
    """A ``TorchFunctionMode`` under which every ReLU computes ``softplus(beta)`` instead.

    It intercepts the same entry points as :class:`~lightning_xai.attribution.ModifiedReLU`
    (``F.relu`` and so ``nn.ReLU``, ``torch.relu(_)``, ``Tensor.relu(_)``); in-place calls write
    the softplus value in place. :meth:`verify` (inherited) raises if a ReLU escaped.
    """

    def __init__(self, beta: float) -> None:
        super().__init__(lambda grad_output, output: grad_output)
        self.beta = beta

    def replace(self, inputs: Tensor, inplace: bool) -> Tensor:
        if not inplace:
            return F.softplus(inputs, beta=self.beta)
        return inputs.copy_(F.softplus(inputs.clone(), beta=self.beta))


def softplus_twin(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """A deep copy of ``model`` whose ``nn.ReLU`` modules are ``nn.Softplus(beta)``; ``model`` is
    not touched. Functional ReLUs are replaced while the copy runs under the fragility attack's
    softplus mode.

    Examples:
        >>> twin = softplus_twin(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
        >>> twin[1]
        Softplus(beta=10.0, threshold=20.0)
    """
    from lightning_xai.metrics.functional.randomization import model_copy  # a cycle at import time

    beta = check_float("softplus_beta", beta, 0.0)
    if beta <= 0:
        raise ValueError(f"Expected argument `softplus_beta` to be positive, but got {beta}.")
    twin = model_copy(model)
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.Softplus(beta=beta))
    return twin


def _gradient_attack_map(times_input: bool) -> AttackMapFn:
    def attack_map(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        scores = select_scores(model(inputs), target)
        (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
        return grad * inputs if times_input else grad

    return attack_map


def _integrated_gradients_attack_map(explainer: Any, max_steps: int) -> AttackMapFn:
    """Integrated Gradients with the explainer's baselines and quadrature rule on at most
    ``max_steps`` points, differentiable in the input (baselines held fixed)."""
    from lightning_xai.attribution.path import quadrature

    method = explainer.method
    n = min(explainer.n_steps, max_steps)
    if method == "riemann_trapezoid":
        n = max(n, 2)

    def attack_map(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        weights_np, alphas_np = quadrature(method, n)
        weights = torch.as_tensor(weights_np, dtype=inputs.dtype, device=inputs.device)
        alphas = torch.as_tensor(alphas_np, dtype=inputs.dtype, device=inputs.device)
        ones = (1,) * inputs.ndim
        maps = []
        for base in explainer.baselines(inputs.detach()):  # [B, ...] each
            diff = inputs - base
            points = base.unsqueeze(0) + alphas.view(-1, *ones) * diff.unsqueeze(0)  # [n, B, ...]
            scores = select_scores(model(points.flatten(0, 1)), target.repeat(n))
            (grad,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
            path = (grad * weights.view(-1, *ones)).sum(dim=0)
            maps.append(path * diff if explainer.multiply_by_inputs else path)
        return torch.stack(maps).mean(dim=0)

    return attack_map


def _grad_cam_attack_map(explainer: Any) -> AttackMapFn:
    """Grad-CAM (or Grad-CAM++) at the explainer's layer, differentiable in the input: the layer's
    activation and its gradient (``create_graph``) combined by the explainer's own weights,
    ``ReLU(sum_k w_k A_k)``, upsampled as the explainer does."""
    from lightning_xai.attribution.cam import LayerCapture, upsample, weighted_channel_sum

    def attack_map(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        name = explainer.layer_name(model)
        capture = LayerCapture(name, "fragility")
        layer = model.get_submodule(name.split(":")[0])
        if name.endswith(":input"):
            handle = layer.register_forward_pre_hook(capture)
        else:
            handle = layer.register_forward_hook(capture)
        try:
            scores = select_scores(model(inputs), target)
        finally:
            handle.remove()
        activation = capture.activation
        (gradient,) = torch.autograd.grad(scores.sum(), activation, create_graph=True)
        maps = weighted_channel_sum(explainer._weights(activation, gradient), activation)
        return upsample(maps, inputs.shape[-2:], explainer.interpolate_mode)

    return attack_map


def default_attack_map(explainer: object, ig_steps: int = 16) -> AttackMapFn:
    """The differentiable map the gradient attack uses for ``explainer``.

    ``x * dS_c/dx`` for :class:`~lightning_xai.attribution.InputXGradient`; Integrated Gradients
    with the explainer's baselines and quadrature rule on at most ``ig_steps`` points for
    :class:`~lightning_xai.attribution.IntegratedGradients`; the map itself at the explainer's
    layer for :class:`~lightning_xai.attribution.GradCAM` and
    :class:`~lightning_xai.attribution.GradCAMPlusPlus` (activation and gradient kept in the
    graph); ``dS_c/dx`` for every other explainer (the map itself for
    :class:`~lightning_xai.attribution.Saliency`, a proxy otherwise: pass ``attack_map`` to
    :func:`fragility` for a better one).

    Examples:
        >>> from lightning_xai.attribution import InputXGradient
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x = torch.rand(3, 1, 2, 2, requires_grad=True)
        >>> maps = default_attack_map(InputXGradient())(model, x, torch.tensor([0, 1, 0]))
        >>> maps.requires_grad, torch.allclose(maps, InputXGradient()(model, x, torch.tensor([0, 1, 0])))
        (True, True)
    """
    from lightning_xai.attribution.cam import GradCAM
    from lightning_xai.attribution.gradient import InputXGradient
    from lightning_xai.attribution.path import IntegratedGradients

    if isinstance(explainer, IntegratedGradients):
        return _integrated_gradients_attack_map(explainer, ig_steps)
    if isinstance(explainer, GradCAM):
        return _grad_cam_attack_map(explainer)
    return _gradient_attack_map(isinstance(explainer, InputXGradient))


def _energy(maps: Tensor) -> Tensor:
    """``[B, H*W]`` per-pixel ``|map|`` summed over channels (what :func:`topk_mask` ranks)."""
    return maps.abs().sum(dim=1).flatten(1)


def _attack_gradient(
    twin: nn.Module,
    attack_map: AttackMapFn,
    inputs: Tensor,
    target: Tensor,
    top0: Tensor,
    com0: Tensor,
    attack: str,
    beta: float,
    method: str,
) -> Tensor:
    """Gradient w.r.t. ``inputs`` of the attack's loss (to be minimised) on the softplus twin."""
    h, w = inputs.shape[-2:]
    with observe(twin), _SoftplusReLU(beta) as mode:
        x = inputs.detach().clone().requires_grad_(True)
        top0, com0 = top0.clone(), com0.clone()  # normal tensors, even under an outer inference_mode
        maps = attack_map(twin, x, target)
        if not isinstance(maps, Tensor) or maps.shape[0] != x.shape[0] or maps.shape[-2:] != (h, w):
            shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise LightningXAIError(f"{method}: `attack_map` returned {shape}, not [B, C, {h}, {w}] maps.")
        energy = _energy(maps).to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        share = energy / energy.sum(dim=1, keepdim=True).clamp_min(1e-30)
        if attack == "topk":  # the map's mass on the original top-k pixels
            loss = (share * top0).sum(dim=1)
        else:  # minus the distance of its centre of mass from the original one
            rows = torch.arange(h, device=x.device, dtype=share.dtype).repeat_interleave(w)
            cols = torch.arange(w, device=x.device, dtype=share.dtype).repeat(h)
            centre = torch.stack([share @ rows, share @ cols], dim=1)
            loss = -((centre - com0.to(share.dtype)) ** 2).sum(dim=1).add(1e-12).sqrt()
        mode.verify(loss, method=method)
        if not loss.requires_grad:  # the map does not depend on the input (a linear model's gradient)
            return torch.zeros_like(inputs)
        (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    if grad is None:
        return torch.zeros_like(inputs)
    return grad.nan_to_num(0.0, 0.0, 0.0)


def _check_range(input_range: object, method: str) -> tuple[float, float] | None:
    if input_range is None:
        return None
    if not isinstance(input_range, (tuple, list)) or len(input_range) != 2:
        raise ValueError(f"{method}: expected `input_range` to be (low, high) or None, but got {input_range!r}.")
    low, high = check_float("input_range[0]", input_range[0]), check_float("input_range[1]", input_range[1])
    if not low < high:
        raise ValueError(f"{method}: expected `input_range` with low < high, but got {input_range!r}.")
    return low, high


def _project(x: Tensor, delta: Tensor, epsilon: float, bounds: tuple[float, float] | None) -> Tensor:
    """``x + delta`` with ``delta`` clipped to the L-infinity ball, then the sum to ``bounds``."""
    delta = delta.clamp(-epsilon, epsilon)
    if bounds is None:
        return x + delta
    return (x + delta).clamp(*bounds)


def _fragility_attack(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    attack: str = "topk",
    epsilon: float = 8 / 255,
    iterations: int = 8,
    step_size: float | None = None,
    softplus_beta: float = 10.0,
    input_range: tuple[float, float] | None = None,
    attack_map: AttackMapFn | None = None,
    candidates: int = 8,
    k: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(attacked inputs [B, ...], top-k intersection [B], centre shift [B])`` (float64 scores)."""
    method = "fragility"
    check_explainer(explainer, method)
    if attack not in ATTACKS:
        raise ValueError(f"{method}: expected argument `attack` to be one of {ATTACKS}, but got {attack!r}.")
    check_float("epsilon", epsilon, 0.0)
    check_int("iterations", iterations, 1)
    check_int("candidates", candidates, 1)
    step_size = check_float("step_size", step_size, 0.0) if step_size is not None else 2.5 * epsilon / iterations
    softplus_beta = check_float("softplus_beta", softplus_beta, 0.0)
    if softplus_beta <= 0:
        raise ValueError(f"{method}: expected argument `softplus_beta` to be positive, but got {softplus_beta}.")
    bounds = _check_range(input_range, method)
    if attack_map is not None and not callable(attack_map):
        raise TypeError(f"{method}: expected `attack_map` to be callable or None, but got {type(attack_map).__name__}.")
    k = check_float("k", k, 0.0, 1.0)
    if not 0.0 < k < 1.0:
        raise ValueError(f"{method}: expected argument `k` to be a fraction in (0, 1), but got {k}.")
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    b = x.shape[0]
    view = (-1,) + (1,) * (x.ndim - 1)
    if target is None:
        label = tgt  # resolve() already took the prediction
    else:
        with observe(model), torch.no_grad():
            label = model(x).argmax(dim=1)
    maps = explain_batched(explainer, model, x, tgt, batch_size, method=method)
    n_top = max(1, round(k * maps.shape[-2] * maps.shape[-1]))
    top0 = topk_mask(maps, n_top)
    com0 = center_of_mass(maps)
    gen = generator_for(seed, x.device)

    def score(candidate: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(label kept, top-k intersection, centre shift) of ``[N*B, ...]`` candidates."""
        reps = candidate.shape[0] // b
        with observe(model), torch.no_grad():
            kept = model(candidate).argmax(dim=1) == label.repeat(reps)
        cmaps = explain_batched(explainer, model, candidate, tgt.repeat(reps), batch_size, method=method)
        inter = (topk_mask(cmaps, n_top) & top0.repeat(reps, 1)).sum(dim=1).to(torch.float64) / n_top
        shift = (center_of_mass(cmaps) - com0.repeat(reps, 1)).to(torch.float64).norm(dim=1)
        return kept, inter, shift

    best_x = x.clone()
    best_inter = torch.ones(b, dtype=torch.float64, device=x.device)
    best_shift = torch.zeros(b, dtype=torch.float64, device=x.device)
    if attack == "random":
        # the earlier random search: `candidates` random-sign steps per iteration, the best kept
        delta = torch.zeros_like(x)
        step = epsilon / max(1, iterations // 2)
        for _ in range(iterations):
            signs = torch.randint(0, 2, (candidates, *x.shape), generator=gen, device=x.device).to(x.dtype) * 2 - 1
            cand = _project(x.unsqueeze(0), delta.unsqueeze(0) + step * signs, epsilon, bounds)  # [K, B, ...]
            kept, inter, shift = score(cand.flatten(0, 1))
            inter = inter.view(candidates, b).masked_fill(~kept.view(candidates, b), 2.0)  # a flip never wins
            value, pick = inter.min(dim=0)
            idx = torch.arange(b, device=x.device)
            better = value < best_inter
            best_x = torch.where(better.view(view), cand[pick, idx], best_x)
            delta = best_x - x
            best_shift = torch.where(better, shift.view(candidates, b)[pick, idx], best_shift)
            best_inter = torch.where(better, value, best_inter)
        return best_x, best_inter, best_shift

    twin = softplus_twin(model, softplus_beta)
    make_map = attack_map if attack_map is not None else default_attack_map(explainer)
    step = torch.full((b,), step_size, dtype=x.dtype, device=x.device)
    current = x.clone()
    for _ in range(iterations):
        grad = _attack_gradient(twin, make_map, current, tgt, top0, com0, attack, softplus_beta, method)
        direction = grad.sign()
        flat = (direction.flatten(1) == 0).all(dim=1)
        if bool(flat.any()):  # the loss is flat there (a map that cannot move): a random sign step
            signs = torch.randint(0, 2, x.shape, generator=gen, device=x.device).to(x.dtype) * 2 - 1
            direction = torch.where(flat.view(view), signs, direction)
        cand = _project(x, current - x - step.view(view) * direction, epsilon, bounds)
        kept, inter, shift = score(cand)
        better = kept & ((inter < best_inter) if attack == "topk" else (shift > best_shift))
        best_x = torch.where(better.view(view), cand, best_x)
        best_inter = torch.where(better, inter, best_inter)
        best_shift = torch.where(better, shift, best_shift)
        # a step that flips the label is undone and the sample's step size halved
        current = torch.where(kept.view(view), cand, current)
        step = torch.where(kept, step, step / 2)
    return best_x, best_inter, best_shift


def _fragility_update(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    **kwargs: Any,
) -> FragilityResult:
    x, inter, shift = _fragility_attack(model, inputs, explainer, target, **kwargs)
    return FragilityResult(inter.to(x.dtype), shift.to(x.dtype))


def fragility(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    attack: str = "topk",
    epsilon: float = 8 / 255,
    iterations: int = 8,
    step_size: float | None = None,
    softplus_beta: float = 10.0,
    input_range: tuple[float, float] | None = None,
    attack_map: AttackMapFn | None = None,
    candidates: int = 8,
    k: float = 0.1,
    seed: int = 0,
    batch_size: int | None = None,
) -> FragilityResult:
    """Fragility (Ghorbani, Abid & Zou 2019): how far a small, label-preserving perturbation can
    move the map.

    The paper's iterative attack: ``iterations`` projected signed-gradient steps
    ``x_{t+1} = Proj(x_t - step_size * sign(grad_x L(x_t)))`` inside the L-infinity ball of radius
    ``epsilon`` around ``x`` (and inside ``input_range`` when given), where the loss ``L`` is, for
    ``attack="topk"``, the share of the map's mass (``|map|`` summed over channels, normalised
    to sum 1) on the original top-k pixels (the paper's differentiable surrogate of the top-k
    intersection), and for ``attack="center_mass"``, minus the distance of the map's centre of
    mass from the original one. A step that changes the predicted label is undone and that
    sample's step size halved; the label-preserving iterate with the lowest top-k intersection
    (``"topk"``) or largest centre shift (``"center_mass"``) is the result.

    The gradient of a gradient map with respect to the input is zero almost everywhere in a ReLU
    network, so, as in the paper, the attack's *direction* is computed on a deep copy of the
    model whose ReLUs (``nn.ReLU`` modules and functional ``F.relu`` / ``torch.relu`` /
    ``Tensor.relu`` calls) are ``softplus(softplus_beta)``; the user's model is never touched.
    The differentiable map on that copy is ``attack_map`` (default: :func:`default_attack_map`,
    the explainer's own map for ``Saliency``, ``InputXGradient`` and ``IntegratedGradients``
    (on at most 16 path points), the gradient as a proxy for other explainers). The maps that are *scored* are always the real explainer's maps on the
    real model. ``attack="random"`` is a random search instead (``candidates`` random-sign
    steps per iteration, the best kept).

    No library implements this metric, so there is no oracle to compare with: the tests check
    the paper's properties (a linear model's gradient map cannot move; on a ReLU CNN the gradient
    attack beats random search with the same budget; labels kept; the perturbation within
    ``epsilon``; the model untouched).

    Cost per iteration: one forward and two backward passes of the batch on the copy (the second
    through the first, ``create_graph=True``; for Integrated Gradients, of its path points), one
    forward for the label and one explainer call; plus one deep copy of the model per call.

    Args:
        model: Maps ``[B, ...]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``.
        target: Class explained; ``None`` for the prediction at ``x``.
        attack: ``"topk"``, ``"center_mass"`` or ``"random"``.
        epsilon: L-infinity radius of the perturbation.
        iterations: Attack steps.
        step_size: Size of each signed step (default ``2.5 * epsilon / iterations``).
        softplus_beta: ``beta`` of the softplus replacing ReLU for the attack's gradient (larger:
            closer to ReLU, sharper).
        input_range: ``(low, high)`` the attacked inputs are clamped to (e.g. ``(0, 1)``), or ``None``.
        attack_map: ``attack_map(model, inputs, target) -> maps``, differentiable in ``inputs``,
            replacing :func:`default_attack_map`.
        candidates: Random candidates per step (``attack="random"`` only).
        k: Fraction of pixels in the top-k set, in ``(0, 1)``.
        seed: Seed of the private generator (random steps where the loss is flat; random search).
        batch_size: Most inputs per explainer call.

    Returns:
        A :class:`FragilityResult` of ``[B]`` top-k intersections (lower: more fragile) and
        centre-of-mass shifts in pixels (higher: more fragile).

    Raises:
        LightningXAIError: The explainer returns NaN or infinity, or a ReLU of the model cannot be
            replaced by softplus (TorchScript, ``torch.ops.aten.relu``).

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> # a linear model's gradient map cannot move
        >>> fragility(model, torch.rand(2, 1, 4, 4), Saliency(), iterations=2).topk_intersection
        tensor([1., 1.])
    """
    return _fragility_update(
        model, inputs, explainer, target, attack=attack, epsilon=epsilon, iterations=iterations,
        step_size=step_size, softplus_beta=softplus_beta, input_range=input_range, attack_map=attack_map,
        candidates=candidates, k=k, seed=seed, batch_size=batch_size,
    )  # fmt: skip
