"""Shared pieces of the perturbation explainers: argument checks, the differentiable Gaussian blur,
the total-variation prior, a row-wise Adam loop and the clean forward pass that resolves the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution.base import TargetType, resolve_target, run_chunked
from lightning_xai.attribution.sampling import progress_bar

__all__ = [
    "smooth",
]


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Expected argument `{name}` to be a bool, but got {value!r}.")
    return value


def _check_image(inputs: Tensor, method: str, cell: tuple[str, int] | None = None) -> tuple[int, int]:
    """``(H, W)`` of ``[B, C, H, W]`` images; raises ``ValueError`` for another rank or, with
    ``cell = (argument name, side)``, when the side exceeds the image's longer side."""
    if inputs.ndim != 4:
        raise ValueError(f"{method}: expected images [B, C, H, W], but got shape {tuple(inputs.shape)}.")
    size = (inputs.shape[-2], inputs.shape[-1])
    if cell is not None and cell[1] > max(size):
        raise ValueError(f"{method}: {cell[0]} {cell[1]} is larger than the image {size}.")
    return size


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


# mask optimisation: meaningful and extremal perturbation
def _mask_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    return math.ceil(size[0] / scale), math.ceil(size[1] / scale)


def _upsample(params: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(params, size=size, mode="bilinear", align_corners=False)
