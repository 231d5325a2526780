"""Prediction difference analysis (Zintgraf, Cohen, Adel & Welling 2017)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType
from lightning_xai.attribution.perturbation.base import _check_bool, _check_image, _resolve
from lightning_xai.attribution.sampling import (
    check_chunk_size,
    default_chunk_size,
    evaluate_rows,
    generator,
    target_scores,
)

__all__ = [
    "PredictionDifference",
]


class PredictionDifference(Explainer):
    """Prediction difference analysis (Zintgraf, Cohen, Adel & Welling 2017).

    For each ``window x window`` patch (all channels, every ``stride`` pixels) the patch is
    marginalised: ``p(c | x without the patch) ~ mean_s p(c | x with patch sample s)``, each
    sample drawn from a Gaussian *conditioned on the patch's frame* of ``padding`` pixels
    (``sampler="conditional"``, the paper's conditional sampling), or from the patch's
    unconditional Gaussian (``"marginal"``). The Gaussian's mean and covariance over
    ``(window + 2 padding)^2 * C`` pixel values are estimated from every such patch of the image
    itself (reflect-padded; a ridge of ``1e-3`` times the mean variance keeps it invertible):
    one conditioning matrix serves every position, so all samples are drawn at once. The weight
    of evidence is ``WE = log2 odds(p(c|x)) - log2 odds(p(c|x without the patch))`` with Laplace
    correction ``p <- (p N + 1) / (N + K)`` (``N = laplace_count``, ``K`` classes); a pixel's
    value is the mean ``WE`` of the windows covering it, the same in every channel (an
    input-shaped, signed map). A region the model ignores gets 0.
    Standard-normal draws come from the private generator and are shared by every position and
    input.

    COST: ``1 + P * n_samples`` forward passes per input (``P`` window positions); no backward.

    Args:
        window: Patch side ``k`` in pixels.
        stride: Step between patches (at most ``window``).
        padding: Width of the conditioning frame around the patch.
        n_samples: Samples per patch.
        sampler: ``"conditional"`` or ``"marginal"``.
        laplace_count: ``N`` of the Laplace correction.
        seed: Seed of the private generator.
        internal_batch_size: Inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> PredictionDifference(window=4, stride=2, n_samples=4)(model, torch.rand(2, 3, 8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """

    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True
    SAMPLERS: ClassVar[tuple[str, ...]] = ("conditional", "marginal")

    def __init__(
        self,
        window: int = 4,
        stride: int = 1,
        padding: int = 2,
        n_samples: int = 10,
        sampler: str = "conditional",
        laplace_count: int = 1000,
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.window = check_int("window", window, 1)
        self.stride = check_int("stride", stride, 1, self.window)
        self.padding = check_int("padding", padding, 0)
        self.n_samples = check_int("n_samples", n_samples, 1)
        if sampler not in self.SAMPLERS:
            raise ValueError(f"Expected argument `sampler` to be one of {list(self.SAMPLERS)}, but got {sampler!r}.")
        if sampler == "conditional" and self.padding == 0:
            raise ValueError("Expected argument `padding` >= 1 with sampler 'conditional', but got 0.")
        self.sampler = sampler
        self.laplace_count = check_int("laplace_count", laplace_count, 1)
        self.seed = check_int("seed", seed, 0)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def _positions(self, size: tuple[int, int]) -> list[Tensor]:
        out = []
        for n in size:
            if self.window > n:
                raise ValueError(f"PredictionDifference: window {self.window} is larger than the image {tuple(size)}.")
            count = math.ceil((n - self.window) / self.stride) + 1
            out.append((torch.arange(count) * self.stride).clamp(max=n - self.window))
        return out

    def _conditional_samples(self, image: Tensor, ys: Tensor, xs: Tensor, z: Tensor) -> Tensor:
        """``[P, S, C, k, k]`` patch samples for one ``[C, H, W]`` image at top-left corners
        ``(ys, xs)`` (``[P]`` each) from standard draws ``z`` ``[S, C * k * k]``."""
        k, pad = self.window, self.padding
        channels = image.shape[0]
        side = k + 2 * pad
        padded = F.pad(image.unsqueeze(0), (pad, pad, pad, pad), mode="reflect" if pad else "constant")
        # every (side x side) patch of the padded image: the Gaussian's statistics
        patches = F.unfold(padded.double(), side).squeeze(0).T  # [L, C*side*side]
        mean = patches.mean(0)
        centred = patches - mean
        cov = centred.T @ centred / max(1, patches.shape[0] - 1)
        cov = cov + 1e-3 * cov.diagonal().mean().clamp(min=1e-12) * torch.eye(
            cov.shape[0], dtype=cov.dtype, device=cov.device
        )
        grid = torch.zeros(channels, side, side, dtype=torch.bool, device=image.device)
        grid[:, pad : pad + k, pad : pad + k] = True
        inner = grid.flatten()
        # the frames at the requested positions (top-left corner (y, x) of the patch = of its frame)
        frames = padded[0].double().unfold(1, side, 1).unfold(2, side, 1)  # [C, nY, nX, side, side]
        frames = frames[:, ys, xs].permute(1, 0, 2, 3).reshape(len(ys), -1)  # [P, C*side*side]
        mu_i, cov_ii = mean[inner], cov[inner][:, inner]
        if self.sampler == "conditional":
            outer = ~inner
            cov_io, cov_oo = cov[inner][:, outer], cov[outer][:, outer]
            gain = torch.linalg.solve(cov_oo, cov_io.T).T  # [d, D - d]
            cond_mean = mu_i + (frames[:, outer] - mean[outer]) @ gain.T  # [P, d]
            cond_cov = cov_ii - gain @ cov_io.T
        else:
            cond_mean = mu_i.expand(len(ys), -1)
            cond_cov = cov_ii
        cond_cov = 0.5 * (cond_cov + cond_cov.T)
        eye = torch.eye(cond_cov.shape[0], dtype=cond_cov.dtype, device=cond_cov.device)
        chol, _ = torch.linalg.cholesky_ex(cond_cov + 1e-9 * cond_cov.diagonal().mean().clamp(min=1e-12) * eye)
        samples = cond_mean[:, None, :] + (z.double() @ chol.T)[None]  # [P, S, d]
        return samples.to(image.dtype).view(len(ys), z.shape[0], channels, k, k)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        _check_image(x, "PredictionDifference")
        batch, channels, height, width = x.shape
        pos_y, pos_x = (p.to(x.device) for p in self._positions((height, width)))
        if self.padding >= min(height, width):
            raise ValueError(f"PredictionDifference: padding {self.padding} must be smaller than the image sides.")
        outputs, resolved = _resolve(model, x, target)
        k, n_s = self.window, self.n_samples
        ys = pos_y.repeat_interleave(len(pos_x))
        xs = pos_x.repeat(len(pos_y))
        n_pos = len(ys)
        gen = generator(self.seed, x.device)
        z = torch.randn(n_s, channels * k * k, generator=gen, device=x.device, dtype=x.dtype)
        samples = torch.stack([self._conditional_samples(x[b], ys, xs, z) for b in range(batch)])  # [B,P,S,C,k,k]
        per_image = n_pos * n_s
        offs = torch.arange(k, device=x.device)

        def rows(sl: slice) -> Tensor:
            r = torch.arange(sl.start, sl.stop, device=x.device)
            b, rest = r // per_image, r % per_image
            p, s = rest // n_s, rest % n_s
            out = x[b].permute(0, 2, 3, 1).clone()  # [n, H, W, C]
            yy = (ys[p][:, None] + offs)[:, :, None]
            xx = (xs[p][:, None] + offs)[:, None, :]
            out[torch.arange(len(r), device=x.device)[:, None, None], yy, xx] = samples[b, p, s].permute(0, 2, 3, 1)
            return out.permute(0, 3, 1, 2)

        probs = evaluate_rows(
            model,
            rows,
            resolved.repeat_interleave(per_image),
            chunk_size=default_chunk_size(x, self.internal_batch_size),
            adaptive=self.internal_batch_size is None,
            score="softmax",
            progress=self.progress,
            desc="PredictionDifference",
            groups=[per_image] * batch,
        ).view(batch, n_pos, n_s)
        classes = outputs.shape[1]
        clean = target_scores(outputs, resolved, "softmax")

        def log_odds(prob: Tensor) -> Tensor:
            prob = (prob.double() * self.laplace_count + 1) / (self.laplace_count + classes)
            return torch.log2(prob) - torch.log2(1 - prob)

        evidence = (log_odds(clean)[:, None] - log_odds(probs.mean(dim=2))).to(x.dtype)  # [B, P]
        idx_y = torch.arange(height, device=x.device)
        idx_x = torch.arange(width, device=x.device)
        cover_y = ((idx_y >= pos_y[:, None]) & (idx_y < pos_y[:, None] + k)).to(x.dtype)  # [nY, H]
        cover_x = ((idx_x >= pos_x[:, None]) & (idx_x < pos_x[:, None] + k)).to(x.dtype)  # [nX, W]
        grid = evidence.view(batch, len(pos_y), len(pos_x))
        total = torch.einsum("bij,ih,jw->bhw", grid, cover_y, cover_x)
        count = cover_y.sum(0)[:, None] * cover_x.sum(0)[None, :]
        return (total / count).unsqueeze(1).expand(-1, channels, -1, -1).contiguous()
