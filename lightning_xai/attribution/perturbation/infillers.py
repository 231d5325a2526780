"""In-fillers of counterfactual in-filling: what replaces the removed pixels (blur, local mean,
conditional Gaussian)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.perturbation.base import smooth

__all__ = [
    "BlurInfiller",
    "ConditionalGaussianInfiller",
    "INFILLERS",
    "LocalMeanInfiller",
]


def _box(inputs: Tensor, size: int) -> Tensor:
    """Mean over a ``size x size`` box (zero padding counted as zero)."""
    return F.avg_pool2d(inputs, size, stride=1, padding=size // 2, count_include_pad=True)[
        ..., : inputs.shape[-2], : inputs.shape[-1]
    ]


# counterfactual in-filling (FIDO)
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
