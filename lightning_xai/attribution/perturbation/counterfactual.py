"""Counterfactual in-filling (FIDO; Chang, Creager, Goldenberg & Duvenaud 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType, observe
from lightning_xai.attribution.perturbation.base import (
    _adam,
    _check_bool,
    _check_image,
    _mask_size,
    _resolve,
    _total_variation,
    _upsample,
)
from lightning_xai.attribution.perturbation.infillers import INFILLERS
from lightning_xai.attribution.sampling import (
    check_chunk_size,
    check_score,
    default_chunk_size,
    generator,
    target_scores,
)

__all__ = [
    "CounterfactualInfill",
]


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
        size = _check_image(x, "CounterfactualInfill", ("mask_scale", self.mask_scale))
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
