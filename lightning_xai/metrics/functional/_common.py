"""Helpers every explanation-quality function shares: argument checks, baselines, batched scoring.

Nothing here is public API; the functions in the sibling modules are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Union

import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    TargetType,
    model_device,
    observe,
    resolve_target,
    select_scores,
    target_indices,
)
from lightning_xai.errors import LightningXAIError

__all__ = [
    "check_explainer",
    "BaselineType",
    "ExplainFn",
    "check_batch",
    "check_maps_like",
    "check_masks",
    "check_finite",
    "make_baseline_for",
    "pixel_scores",
    "ScoreFn",
    "score_fn",
    "step_chunks",
    "resolve",
    "explain_batched",
    "given_or_explained",
    "inverse_order",
    "generator_for",
]

BaselineType = Union[float, str, Tensor]
"""What removed pixels are replaced with: a number, ``"black"`` (each input's minimum),
``"white"`` (its maximum), ``"mean"`` (its mean), ``"blur"`` (a Gaussian blur of the input,
sigma = size / 10) or a tensor broadcastable to the inputs."""

ExplainFn = Callable[[nn.Module, Tensor, Tensor], Tensor]
"""An explainer: ``explain(model, inputs, target) -> maps`` (every
:class:`~lightning_xai.attribution.Explainer` is one)."""

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def check_batch(name: str, value: object, *, method: str) -> Tensor:
    """``value`` as a floating-point ``[B, C, H, W]`` tensor, or a clear error."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{method}: expected `{name}` to be a Tensor, but got {type(value).__name__}.")
    if value.ndim != 4:
        raise ValueError(f"{method}: expected `{name}` of shape [B, C, H, W], but got {tuple(value.shape)}.")
    if not value.is_floating_point():
        raise TypeError(f"{method}: expected floating-point `{name}`, but got dtype {value.dtype}.")
    return value


def check_maps_like(maps: object, inputs: Tensor, *, method: str, name: str = "attributions") -> Tensor:
    """``maps`` as ``[B, 1 or C, H, W]`` matching ``inputs`` ``[B, C, H, W]``, finite."""
    maps = check_batch(name, maps, method=method)
    b, c, h, w = inputs.shape
    if maps.shape[0] != b or maps.shape[-2:] != (h, w) or maps.shape[1] not in (1, c):
        raise ValueError(
            f"{method}: expected `{name}` of shape [{b}, 1 or {c}, {h}, {w}] to match the inputs, "
            f"but got {tuple(maps.shape)}."
        )
    return check_finite(name, maps, method=method)


def check_masks(masks: object, maps: Tensor, *, method: str) -> Tensor:
    """Boolean ``[B, H*W]`` masks from ``[B, 1, H, W]`` (or ``[B, H, W]``) ground truth matching ``maps``."""
    if masks is None:
        raise ValueError(f"{method}: needs ground-truth `masks` [B, 1, H, W], but got None.")
    if not isinstance(masks, Tensor):
        raise TypeError(f"{method}: expected `masks` to be a Tensor, but got {type(masks).__name__}.")
    if masks.ndim == 3:
        masks = masks.unsqueeze(1)
    if masks.ndim != 4 or masks.shape[0] != maps.shape[0] or masks.shape[-2:] != maps.shape[-2:]:
        raise ValueError(
            f"{method}: expected `masks` of shape [{maps.shape[0]}, 1, {maps.shape[-2]}, {maps.shape[-1]}] "
            f"to match the maps {tuple(maps.shape)}, but got {tuple(masks.shape)}."
        )
    return (masks.detach().to(maps.device).amax(dim=1) > 0.5).flatten(1)


def check_explainer(explainer: object, method: str) -> None:
    """Raise ``TypeError`` unless ``explainer`` is callable as ``explainer(model, inputs, target)``."""
    if not callable(explainer):
        raise TypeError(
            f"{method}: expected `explainer` to be callable as explainer(model, inputs, target), "
            f"but got {type(explainer).__name__}."
        )


def check_finite(name: str, value: Tensor, *, method: str) -> Tensor:
    """Raise :class:`LightningXAIError` when ``value`` holds NaN or infinity."""
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise LightningXAIError(f"{method}: `{name}` of shape {tuple(value.shape)} holds {bad} NaN/inf values.")
    return value


def pixel_scores(maps: Tensor) -> Tensor:
    """``[B, H*W]`` per-pixel attribution: the channel sum (signed) of ``[B, C, H, W]`` maps."""
    return maps.detach().sum(dim=1).flatten(1)


def make_baseline_for(baseline: BaselineType, inputs: Tensor, *, method: str) -> Tensor:
    """The replacement values for ``inputs`` as a tensor broadcastable to ``[B, C, H, W]``."""
    if isinstance(baseline, bool):
        raise TypeError(f"{method}: expected `baseline` to be a float, a string or a Tensor, but got {baseline!r}.")
    if isinstance(baseline, (int, float)):
        return torch.full((1, 1, 1, 1), float(baseline), dtype=inputs.dtype, device=inputs.device)
    if isinstance(baseline, Tensor):
        try:
            torch.broadcast_shapes(baseline.shape, inputs.shape)
        except RuntimeError:
            raise ValueError(
                f"{method}: `baseline` of shape {tuple(baseline.shape)} does not broadcast to the inputs "
                f"{tuple(inputs.shape)}."
            ) from None
        return baseline.detach().to(device=inputs.device, dtype=inputs.dtype)
    if isinstance(baseline, str):
        flat = inputs.flatten(1)
        if baseline == "black":
            return flat.amin(dim=1).view(-1, 1, 1, 1)
        if baseline == "white":
            return flat.amax(dim=1).view(-1, 1, 1, 1)
        if baseline == "mean":
            return flat.mean(dim=1).view(-1, 1, 1, 1)
        if baseline == "blur":
            from lightning_xai.attribution.path import gaussian_blur

            return gaussian_blur(inputs, sigma=max(inputs.shape[-2:]) / 10.0)
        raise ValueError(
            f"{method}: expected `baseline` in ('black', 'white', 'mean', 'blur'), a float or a Tensor, "
            f"but got {baseline!r}."
        )
    raise TypeError(
        f"{method}: expected `baseline` to be a float, a string or a Tensor, but got {type(baseline).__name__}."
    )


def score_fn(model: nn.Module, softmax: bool) -> ScoreFn:
    """``f(x, target) -> [N]``: the model's (softmax) score of ``target`` for a batch ``x``."""

    def scores(x: Tensor, target: Tensor) -> Tensor:
        out = model(x)
        if out.ndim != 2:
            raise ValueError(f"Expected the model to return [batch, classes] scores, but got {tuple(out.shape)}.")
        if softmax:
            out = out.softmax(dim=1)
        return select_scores(out, target)

    return scores


def step_chunks(steps: int, batch: int, batch_size: int | None) -> Iterator[slice]:
    """Slices over ``range(steps)`` so that each chunk holds at most ``batch_size`` images
    (``steps_in_chunk * batch``); at least one step per chunk."""
    per = steps if not batch_size else max(1, batch_size // max(batch, 1))
    for start in range(0, steps, per):
        yield slice(start, min(start + per, steps))


def resolve(model: nn.Module, inputs: Tensor, target: TargetType) -> tuple[Tensor, Tensor]:
    """Inputs on the model's device and ``target`` as ``[B]`` indices (the prediction for ``None``)."""
    device = model_device(model)
    x = inputs.detach().to(device)
    if target is None:
        with observe(model), torch.no_grad():
            return x, resolve_target(None, model(x))
    return x, target_indices(target, x.shape[0], device)


def explain_batched(
    explainer: ExplainFn, model: nn.Module, inputs: Tensor, target: Tensor, batch_size: int | None, *, method: str
) -> Tensor:
    """Call ``explainer`` on ``inputs`` ``[N, ...]`` in chunks of ``batch_size`` and concatenate;
    NaN or infinite maps raise :class:`LightningXAIError`."""
    outs = []
    size = batch_size or inputs.shape[0]
    for start in range(0, inputs.shape[0], size):
        stop = min(start + size, inputs.shape[0])
        with torch.inference_mode(False):  # an inference-mode target would be saved for backward
            chunk_target = target[start:stop].clone()
        maps = explainer(model, inputs[start:stop], chunk_target)
        if not isinstance(maps, Tensor):
            raise TypeError(f"{method}: the explainer returned {type(maps).__name__}, not a Tensor.")
        outs.append(maps.detach())
    maps = torch.cat(outs)
    return check_finite("explainer output", maps, method=method)


def generator_for(seed: int, device: torch.device) -> torch.Generator:
    """A private generator on ``device`` seeded with ``seed`` (the global RNG is never touched)."""
    return torch.Generator(device=device).manual_seed(seed)


def given_or_explained(
    explainer: ExplainFn, model: nn.Module, x: Tensor, target: Tensor, attributions: Tensor | None,
    batch_size: int | None, method: str,
) -> Tensor:  # fmt: skip
    """The maps of ``x``: ``attributions`` if given (checked finite, on ``x``'s device), else the
    explainer's."""
    if attributions is None:
        return explain_batched(explainer, model, x, target, batch_size, method=method)
    return check_finite("attributions", attributions.detach().to(x.device), method=method)


def inverse_order(order: Tensor) -> Tensor:
    """``[B, P]`` position of each feature in the per-row ordering ``order`` (``[B, P]`` indices,
    e.g. a sort's): the inverse permutation of every row.

    Examples:
        >>> inverse_order(torch.tensor([[2, 0, 1]]))
        tensor([[1, 2, 0]])
    """
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)
