"""Kernel SHAP (Lundberg & Lee 2017) over superpixels."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_xai.attribution.sampling import generator
from lightning_xai.attribution.surrogate.base import BaselineType, _LinearSurrogate, _solve_spd
from lightning_xai.attribution.surrogate.segmentation import SegmentationType

__all__ = [
    "KernelSHAP",
    "shapley_kernel",
]


def shapley_kernel(k: int, sizes: Tensor) -> Tensor:
    """The Shapley kernel ``(K - 1) / (C(K, s) s (K - s))`` for coalition sizes ``0 < s < K``."""
    s = sizes.double()
    log_comb = math.lgamma(k + 1) - torch.lgamma(s + 1) - torch.lgamma(k - s + 1)
    return (k - 1) / (torch.exp(log_comb) * s * (k - s))


class KernelSHAP(_LinearSurrogate):
    """Kernel SHAP (Lundberg & Lee 2017) over superpixels.

    Shapley values ``phi`` of the superpixels for the target's raw output, with the "absent"
    superpixels at the baseline: the solution of
    ``min sum_s pi_s (f(z_s) - f(0) - z_s . phi)^2`` subject to the efficiency constraint
    ``sum(phi) = f(1) - f(0)`` (enforced exactly through its KKT system, batched in torch), with
    ``pi`` the Shapley kernel :func:`shapley_kernel`. Coalitions:

    * ``2^K - 2 <= n_samples``: every proper non-empty coalition with its kernel weight: the
      result is the exact Shapley values of the superpixel game, for any model.
    * otherwise ``n_samples`` coalitions drawn with sizes ``s`` from the kernel's size
      distribution ``p(s) ~ (K - 1) / (s (K - s))`` and members uniformly, each with weight 1
      (the kernel is in the sampling; captum's scheme).

    For a model linear in the coalition (e.g. a linear model) any spanning set of coalitions
    gives the exact Shapley values.

    COST: ``2 + min(n_samples, 2^K - 2)`` forward passes per input, in chunks; no backward.

    Args:
        n_samples: Coalitions per input.
        segmentation: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"`` or a callable.
        segmentation_kwargs: Keyword arguments of the segmentation.
        baseline: Value of absent superpixels: a float, a tensor or ``"mean"``.
        seed: Seed of the private generator (every input gets the same draws).
        internal_batch_size: Perturbed inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        >>> shap = KernelSHAP(n_samples=64, segmentation_kwargs={"n_segments": 8})
        >>> shap(model, torch.rand(2, 3, 16, 16), 1).shape
        torch.Size([2, 3, 16, 16])
    """

    registry_name: ClassVar[str | None] = "kernel_shap"
    _n_extra: ClassVar[int] = 2

    def __init__(
        self,
        n_samples: int = 200,
        segmentation: SegmentationType = "slic",
        segmentation_kwargs: dict[str, Any] | None = None,
        baseline: BaselineType = 0.0,
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(n_samples, segmentation, segmentation_kwargs, baseline, seed, internal_batch_size, progress)

    def sample(self, k: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        device = torch.device(device)
        if k < 2:
            z = torch.ones(1, k, dtype=torch.long, device=device)
            return z, torch.ones(1, dtype=torch.float64, device=device)
        if k <= 30 and 2**k - 2 <= self.n_samples:  # exhaustive: exact Shapley values
            codes = torch.arange(1, 2**k - 1, device=device)
            z = (codes[:, None] >> torch.arange(k, device=device)) & 1
            return z, shapley_kernel(k, z.sum(1))
        gen = generator(self.seed, device)
        sizes_all = torch.arange(1, k, device=device, dtype=torch.float64)
        probs = (k - 1) / (sizes_all * (k - sizes_all))
        sizes = torch.multinomial(probs, self.n_samples, replacement=True, generator=gen) + 1
        ranks = torch.rand(self.n_samples, k, generator=gen, device=device).argsort(1).argsort(1)
        z = (ranks < sizes[:, None]).long()
        return z, torch.ones(self.n_samples, dtype=torch.float64, device=device)

    def _weights(self, samples: Tensor) -> Tensor:
        return torch.ones(samples.shape[0], dtype=torch.float64, device=samples.device)

    def _solve(self, design: Tensor, y: Tensor, w: Tensor, live: Tensor, full: Tensor, empty: Tensor | None) -> Tensor:
        assert empty is not None
        batch, _, k = design.shape
        target = y - empty[:, None]
        gram = design.transpose(1, 2) @ (w[..., None] * design)
        gram = gram + torch.diag_embed((~live).to(gram.dtype))
        rhs = (design.transpose(1, 2) @ (w * target)[..., None]).squeeze(-1)
        ones = live.to(gram.dtype)
        kkt = gram.new_zeros(batch, k + 1, k + 1)
        kkt[:, :k, :k] = gram
        kkt[:, :k, k] = ones
        kkt[:, k, :k] = ones
        rhs_full = torch.cat([rhs, (full - empty)[:, None]], dim=1)
        return _solve_spd(kkt, rhs_full)[:, :k]
