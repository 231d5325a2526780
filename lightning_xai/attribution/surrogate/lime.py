"""LIME for images (Ribeiro, Singh & Guestrin 2016) over superpixels."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_xai._validation import check_float
from lightning_xai.attribution.sampling import generator
from lightning_xai.attribution.surrogate.base import BaselineType, _LinearSurrogate, _solve_spd
from lightning_xai.attribution.surrogate.segmentation import SegmentationType

__all__ = [
    "LIME",
    "lime_kernel",
]


def lime_kernel(samples: Tensor, kernel_width: float = 0.25) -> Tensor:
    """LIME's weights ``exp(-d^2 / (2 w^2))`` of binary coalitions ``[N, K]``, ``d`` the cosine
    distance to the all-ones coalition (``1 - sqrt(|z| / K)``; the empty coalition has
    ``d = 1``).

    Examples:
        >>> lime_kernel(torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]), 0.25)
        tensor([1.0000, 0.1353], dtype=torch.float64)
    """
    z = samples.double()
    k = z.shape[-1]
    distance = 1 - (z.sum(-1) / k).sqrt()
    return torch.exp(-(distance**2) / (2 * kernel_width**2))


class LIME(_LinearSurrogate):
    """LIME for images (Ribeiro, Singh & Guestrin 2016) over superpixels.

    ``n_samples`` coalitions are drawn with every superpixel on with probability 1/2 (the first
    coalition is the full image, as in LIME); each perturbed image is scored (the target's raw
    output, captum's convention) and a ridge regression with intercept,
    ``min sum_s pi_s (f_s - b - z_s . beta)^2 + alpha |beta|^2``, weighted by
    :func:`lime_kernel` (``kernel_width``), gives one coefficient per superpixel. The
    regression is solved in closed form in torch for the whole batch at once (weighted centring,
    then a ``K x K`` system per image): the same problem scikit-learn's ``Ridge(alpha)`` with
    ``sample_weight`` solves, which captum's ``Lime(interpretable_model=SkLearnRidge(alpha))``
    calls.

    COST: ``1 + n_samples`` forward passes per input, in chunks; no backward pass.

    Args:
        n_samples: Coalitions per input.
        kernel_width: Width of the exponential kernel on the cosine distance.
        alpha: Ridge penalty.
        segmentation: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"`` or a callable
            ``images -> [B, H, W]`` labels.
        segmentation_kwargs: Keyword arguments of the segmentation.
        baseline: Value of removed superpixels: a float, a tensor broadcastable to the inputs,
            or ``"mean"`` (each superpixel's mean colour).
        seed: Seed of the private generator (every input gets the same draws).
        internal_batch_size: Perturbed inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        >>> lime = LIME(n_samples=64, segmentation_kwargs={"n_segments": 8})
        >>> lime(model, torch.rand(2, 3, 16, 16), 1).shape
        torch.Size([2, 3, 16, 16])
    """

    registry_name: ClassVar[str | None] = "lime"

    def __init__(
        self,
        n_samples: int = 200,
        kernel_width: float = 0.25,
        alpha: float = 1.0,
        segmentation: SegmentationType = "slic",
        segmentation_kwargs: dict[str, Any] | None = None,
        baseline: BaselineType = 0.0,
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(n_samples, segmentation, segmentation_kwargs, baseline, seed, internal_batch_size, progress)
        self.kernel_width = check_float("kernel_width", kernel_width, 0.0)
        if self.kernel_width == 0.0:
            raise ValueError("Expected argument `kernel_width` to be > 0, but got 0.0.")
        self.alpha = check_float("alpha", alpha, 0.0)

    def sample(self, k: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        gen = generator(self.seed, torch.device(device))
        z = (torch.rand(self.n_samples, k, generator=gen, device=device) < 0.5).long()
        z[0] = 1
        return z, self._weights(z)

    def _weights(self, samples: Tensor) -> Tensor:
        return lime_kernel(samples, self.kernel_width)

    def _solve(self, design: Tensor, y: Tensor, w: Tensor, live: Tensor, full: Tensor, empty: Tensor | None) -> Tensor:
        total = w.sum(1, keepdim=True).clamp(min=1e-300)
        z_mean = (w[..., None] * design).sum(1) / total
        y_mean = (w * y).sum(1, keepdim=True) / total
        zc = design - z_mean[:, None, :]
        yc = y - y_mean
        gram = zc.transpose(1, 2) @ (w[..., None] * zc)
        diag = torch.where(live, self.alpha, 1.0)  # dead columns are all zero: coefficient 0
        gram = gram + torch.diag_embed(diag.to(gram.dtype))
        rhs = (zc.transpose(1, 2) @ (w * yc)[..., None]).squeeze(-1)
        return _solve_spd(gram, rhs)
