"""Meaningful perturbation (Fong & Vedaldi 2017): the smallest smooth blur mask that deletes the
evidence."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType
from lightning_xai.attribution.perturbation.base import (
    _adam,
    _check_bool,
    _check_image,
    _mask_size,
    _resolve,
    _total_variation,
    _upsample,
    smooth,
)
from lightning_xai.attribution.sampling import check_chunk_size, check_score, default_chunk_size, target_scores

__all__ = [
    "MeaningfulPerturbation",
]


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
        >>> import torch
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
        size = _check_image(x, "MeaningfulPerturbation", ("mask_scale", self.mask_scale))
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
