"""Faithfulness: does removing what the map calls important change the model's output?

* :func:`deletion_auc` / :func:`insertion_auc` (Petsiuk et al. 2018): area under the class
  probability as the top pixels are removed / revealed.
* :func:`pixel_flipping` (Bach et al. 2015) and :func:`region_perturbation` (Samek et al. 2017):
  the score curve as pixels / square regions are flipped most- (or least-) relevant first.
* :func:`faithfulness_correlation` (Bhatt et al. 2020): Pearson correlation between the summed
  attribution of random pixel subsets and the score drop when they are removed.
* :func:`infidelity` (Yeh et al. 2019): expected squared error between ``I . phi`` and the score
  change under random perturbations ``I``.

Every perturbed input is evaluated in batches (one forward per chunk of steps, ``batch_size``
images at most), on the model's device, inside :func:`~lightning_xai.attribution.observe` (eval
mode, no parameter gradients, RNG and BatchNorm statistics restored). Random draws come from a
private generator seeded with ``seed``; the global RNG is never touched.

A pixel is one ``(h, w)`` position of the map: with ``[B, 1, H, W]`` maps removing a pixel
replaces all its channels; with input-shaped ``[B, C, H, W]`` maps each channel value is a feature
of its own. Each public function returns per-sample values (the curves, for the curve metrics),
which the Metric classes accumulate; a ``_compute`` function reduces a curve to its score.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType, observe
from lightning_xai.metrics.functional._common import (
    BaselineType,
    check_batch,
    check_maps_like,
    generator_for,
    inverse_order,
    make_baseline_for,
    pixel_scores,
    resolve,
    score_fn,
    step_chunks,
)

__all__ = [
    "deletion_auc",
    "insertion_auc",
    "pixel_flipping",
    "region_perturbation",
    "faithfulness_correlation",
    "infidelity",
    "curve_auc",
]


def _check_order(order: str, method: str) -> str:
    if order not in ("morf", "lerf"):
        raise ValueError(f"{method}: expected `order` in ('morf', 'lerf'), but got {order!r}.")
    return order


def _features(maps: Tensor) -> Tensor:
    """``[B, P]`` feature scores: per pixel for one-channel maps, per element otherwise."""
    return pixel_scores(maps) if maps.shape[1] == 1 else maps.detach().flatten(1)


def _ranks(scores: Tensor, descending: bool) -> Tensor:
    """Position of each feature in the removal order (``[B, P]`` long; stable for ties)."""
    return inverse_order(torch.sort(scores, dim=1, descending=descending, stable=True).indices)


def _curve(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    ranks: Tensor,
    counts: Tensor,
    baseline: Tensor,
    map_channels: int,
    *,
    insert: bool,
    softmax: bool,
    batch_size: int | None,
) -> Tensor:
    """``[B, S]`` scores of ``target`` with the features of rank ``< counts[s]`` removed (replaced
    by ``baseline``) or, with ``insert``, only those kept (the rest replaced)."""
    b, c, h, w = x.shape
    f = score_fn(model, softmax)
    base = baseline.expand_as(x)
    out = []
    with observe(model), torch.no_grad():
        for sl in step_chunks(counts.numel(), b, batch_size):
            n = counts[sl]
            chosen = (ranks.unsqueeze(0) < n.view(-1, 1, 1)).view(-1, b, map_channels, h, w)  # [S, B, m, H, W]
            keep_x = chosen if insert else ~chosen
            xp = torch.where(keep_x, x.unsqueeze(0), base.unsqueeze(0)).reshape(-1, c, h, w)
            out.append(f(xp, target.repeat(n.numel())).view(n.numel(), b))
    return torch.cat(out).T.contiguous()


def curve_auc(curve: Tensor) -> Tensor:
    """Trapezoidal area under ``[B, S]`` curves sampled evenly over ``[0, 1]`` (``[B]``).

    Examples:
        >>> curve_auc(torch.tensor([[1.0, 0.5, 0.0]]))
        tensor([0.5000])
    """
    if curve.shape[1] < 2:
        return curve[:, 0].clone()
    return (curve[:, 1:] + curve[:, :-1]).sum(dim=1) / (2 * (curve.shape[1] - 1))


# ---------------------------------------------------------------------------------------------
# deletion / insertion
# ---------------------------------------------------------------------------------------------
def _deletion_curve_update(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType,
    *,
    steps: int,
    baseline: BaselineType,
    insert: bool,
    softmax: bool,
    batch_size: int | None,
    method: str,
) -> Tensor:
    check_int("steps", steps, 1)
    check_int("batch_size", batch_size, 1, allow_none=True)
    inputs = check_batch("inputs", inputs, method=method)
    maps = check_maps_like(attributions, inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    scores = _features(maps.to(x.device))
    p = scores.shape[1]
    ranks = _ranks(scores, descending=True)
    counts = torch.round(torch.arange(steps + 1, device=x.device, dtype=torch.float64) * p / steps).long()
    base = make_baseline_for(baseline, x, method=method)
    return _curve(
        model, x, tgt, ranks, counts, base, maps.shape[1], insert=insert, softmax=softmax, batch_size=batch_size
    )


def _deletion_auc_compute(curves: Tensor) -> Tensor:
    return curve_auc(curves)


def deletion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    steps: int = 20,
    baseline: BaselineType = 0.0,
    softmax: bool = True,
    batch_size: int | None = 256,
) -> Tensor:
    """Deletion AUC (Petsiuk et al. 2018): area under the target's probability as the most
    attributed pixels are replaced by ``baseline``, ``1/steps`` of the pixels at a time.

    Lower is better: a faithful map names the pixels whose removal kills the score first. The
    curve has ``steps + 1`` points (0% .. 100% removed) on an even grid over ``[0, 1]``.
    Cost: ``steps + 1`` forward passes of the batch, in chunks of ``batch_size`` images.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1, H, W]`` or ``[B, C, H, W]`` maps (higher = more important).
        target: Class per input; ``None`` for the prediction.
        steps: Number of removal steps.
        baseline: Replacement value, see :data:`BaselineType`.
        softmax: Score with the softmax probability (as the paper) instead of the logit.
        batch_size: Most perturbed images per forward pass (``None``: all steps at once).

    Returns:
        ``[B]`` areas (in probability units for ``softmax=True``).

    Raises:
        ValueError: Shapes do not match, ``steps`` < 1, a bad ``baseline``.
        LightningXAIError: ``attributions`` hold NaN or infinity.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(3, 1, 4, 4)
        >>> deletion_auc(model, x, torch.rand(3, 1, 4, 4), steps=4).shape
        torch.Size([3])
    """
    curves = _deletion_curve_update(
        model, inputs, attributions, target, steps=steps, baseline=baseline, insert=False,
        softmax=softmax, batch_size=batch_size, method="deletion_auc",
    )  # fmt: skip
    return _deletion_auc_compute(curves)


def insertion_auc(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    steps: int = 20,
    baseline: BaselineType = "blur",
    softmax: bool = True,
    batch_size: int | None = 256,
) -> Tensor:
    """Insertion AUC (Petsiuk et al. 2018): area under the target's probability as the most
    attributed pixels are revealed on top of ``baseline`` (a blurred copy, as the paper).

    Higher is better. Same grid and cost as :func:`deletion_auc`.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1, H, W]`` or ``[B, C, H, W]`` maps.
        target: Class per input; ``None`` for the prediction.
        steps: Number of insertion steps.
        baseline: The canvas pixels are revealed on, see :data:`BaselineType`.
        softmax: Score with the softmax probability instead of the logit.
        batch_size: Most perturbed images per forward pass.

    Returns:
        ``[B]`` areas.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> insertion_auc(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), steps=4).shape
        torch.Size([2])
    """
    curves = _deletion_curve_update(
        model, inputs, attributions, target, steps=steps, baseline=baseline, insert=True,
        softmax=softmax, batch_size=batch_size, method="insertion_auc",
    )  # fmt: skip
    return _deletion_auc_compute(curves)


# ---------------------------------------------------------------------------------------------
# pixel flipping
# ---------------------------------------------------------------------------------------------
def _pixel_flipping_compute(curves: Tensor) -> Tensor:
    return curve_auc(curves)


def pixel_flipping(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    features_in_step: int = 1,
    order: str = "morf",
    baseline: BaselineType = "black",
    softmax: bool = True,
    batch_size: int | None = 256,
) -> Tensor:
    """Pixel flipping (Bach et al. 2015): the target score after each step of replacing the next
    ``features_in_step`` pixels, most relevant first (``"morf"``) or least relevant first (``"lerf"``).

    Same curve as quantus ``PixelFlipping`` (its ``"black"`` baseline is each input's minimum).
    Cost: ``ceil(P / features_in_step)`` forward passes of the batch, in chunks.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1, H, W]`` or ``[B, C, H, W]`` maps.
        target: Class per input; ``None`` for the prediction.
        features_in_step: Pixels flipped per step.
        order: ``"morf"`` or ``"lerf"``.
        baseline: Replacement value, see :data:`BaselineType`.
        softmax: Softmax probability (quantus' default) instead of the logit.
        batch_size: Most perturbed images per forward pass.

    Returns:
        ``[B, ceil(P / features_in_step)]`` curves (``P`` = pixels of a map). Their normalised
        area is :func:`curve_auc` (what :class:`~lightning_xai.metrics.PixelFlipping` reports).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> pixel_flipping(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), features_in_step=4).shape
        torch.Size([2, 4])
    """
    method = "pixel_flipping"
    check_int("features_in_step", features_in_step, 1)
    check_int("batch_size", batch_size, 1, allow_none=True)
    _check_order(order, method)
    inputs = check_batch("inputs", inputs, method=method)
    maps = check_maps_like(attributions, inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    scores = _features(maps.to(x.device))
    p = scores.shape[1]
    if features_in_step > p:
        raise ValueError(f"{method}: `features_in_step` ({features_in_step}) exceeds the {p} features of a map.")
    ranks = _ranks(scores, descending=order == "morf")
    n = math.ceil(p / features_in_step)
    counts = torch.clamp(torch.arange(1, n + 1, device=x.device) * features_in_step, max=p)
    base = make_baseline_for(baseline, x, method=method)
    return _curve(model, x, tgt, ranks, counts, base, maps.shape[1], insert=False, softmax=softmax,
                  batch_size=batch_size)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# region perturbation
# ---------------------------------------------------------------------------------------------
def _padding(size: int, patch: int) -> tuple[int, int]:
    total = (-size) % patch
    return total // 2, total - total // 2


def _region_perturbation_compute(curves: Tensor) -> Tensor:
    return curve_auc(curves)


def region_perturbation(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    patch_size: int = 8,
    regions: int = 100,
    order: str = "morf",
    baseline: BaselineType = "black",
    softmax: bool = True,
    batch_size: int | None = 256,
) -> Tensor:
    """Region perturbation (Samek et al. 2017): the score drop ``f(x) - f(x_k)`` after replacing the
    ``k`` most (``"morf"``) or least (``"lerf"``) relevant ``patch_size`` squares, ``k = 1..regions``.

    Squares tile the image without overlap (a grid centred like quantus' padding when the size is
    not a multiple); a square's relevance is its summed attribution. Same curve as quantus
    ``RegionPerturbation``. Cost: ``min(regions, #squares) + 1`` forward passes, in chunks.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1, H, W]`` or ``[B, C, H, W]`` maps (channels are summed).
        target: Class per input; ``None`` for the prediction.
        patch_size: Side of a square region in pixels.
        regions: Number of regions replaced (curve length, capped at the number of squares).
        order: ``"morf"`` or ``"lerf"``.
        baseline: Replacement value, see :data:`BaselineType`.
        softmax: Softmax probability (quantus' default) instead of the logit.
        batch_size: Most perturbed images per forward pass.

    Returns:
        ``[B, min(regions, #squares)]`` score drops; higher (for MoRF) is more faithful.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> region_perturbation(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), patch_size=2).shape
        torch.Size([2, 4])
    """
    method = "region_perturbation"
    check_int("patch_size", patch_size, 1)
    check_int("regions", regions, 1)
    check_int("batch_size", batch_size, 1, allow_none=True)
    _check_order(order, method)
    inputs = check_batch("inputs", inputs, method=method)
    maps = check_maps_like(attributions, inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    b, _, h, w = x.shape
    # Non-overlapping patch_size squares on a grid centred like quantus' padding.
    (ph, _), (pw, _) = _padding(h, patch_size), _padding(w, patch_size)
    nh, nw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    rows = (torch.arange(h, device=x.device) + ph) // patch_size
    cols = (torch.arange(w, device=x.device) + pw) // patch_size
    patch_of = (rows.view(-1, 1) * nw + cols.view(1, -1)).flatten()  # [H*W]
    pix = pixel_scores(maps.to(x.device)).to(torch.float64)
    sums = torch.zeros(b, nh * nw, dtype=pix.dtype, device=x.device).index_add_(1, patch_of, pix)
    patch_rank = _ranks(sums, descending=order == "morf")
    ranks = patch_rank[:, patch_of]  # [B, H*W]: the rank of the pixel's patch
    counts = torch.arange(1, min(regions, nh * nw) + 1, device=x.device)
    base = make_baseline_for(baseline, x, method=method)
    f = score_fn(model, softmax)
    with observe(model), torch.no_grad():
        original = f(x, tgt)
    curve = _curve(model, x, tgt, ranks, counts, base, 1, insert=False, softmax=softmax, batch_size=batch_size)
    return original.unsqueeze(1) - curve


# ---------------------------------------------------------------------------------------------
# faithfulness correlation
# ---------------------------------------------------------------------------------------------
def _pearson(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise Pearson correlation of ``[B, N]`` tensors in float64 (NaN for a constant row)."""
    a = a.to(torch.float64) - a.to(torch.float64).mean(dim=1, keepdim=True)
    b = b.to(torch.float64) - b.to(torch.float64).mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1))


def faithfulness_correlation(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    runs: int = 100,
    subset_size: int = 224,
    baseline: BaselineType = "black",
    softmax: bool = False,
    seed: int = 0,
    subsets: Tensor | None = None,
    batch_size: int | None = 256,
) -> Tensor:
    """Faithfulness correlation (Bhatt et al. 2020): Pearson correlation, over ``runs`` random
    subsets of ``subset_size`` pixels, between the subset's summed attribution and the drop of
    the target score when the subset is replaced by ``baseline``.

    Higher is better (1: the map predicts every subset's effect up to scale). Same score as
    quantus ``FaithfulnessCorrelation`` for the same subsets. Cost: ``runs + 1`` forward passes.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1, H, W]`` or ``[B, C, H, W]`` maps.
        target: Class per input; ``None`` for the prediction.
        runs: Number of random subsets per input.
        subset_size: Pixels per subset.
        baseline: Replacement value, see :data:`BaselineType`.
        softmax: Softmax probability instead of the logit (quantus' default: logit).
        seed: Seed of the private generator drawing the subsets.
        subsets: Optional ``[B, runs, subset_size]`` feature indices to use instead of drawing.
        batch_size: Most perturbed images per forward pass.

    Returns:
        ``[B]`` correlations in ``[-1, 1]`` (NaN where the score never changes).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> faithfulness_correlation(model, x, torch.rand(2, 1, 4, 4), runs=5, subset_size=4).shape
        torch.Size([2])
    """
    method = "faithfulness_correlation"
    check_int("runs", runs, 2)
    check_int("subset_size", subset_size, 1)
    check_int("seed", seed, 0)
    check_int("batch_size", batch_size, 1, allow_none=True)
    inputs = check_batch("inputs", inputs, method=method)
    maps = check_maps_like(attributions, inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    b, c, h, w = x.shape
    scores = _features(maps.to(x.device))
    p = scores.shape[1]
    if subsets is None:
        if subset_size > p:
            raise ValueError(f"{method}: `subset_size` ({subset_size}) exceeds the {p} features of a map.")
        gen = generator_for(seed, x.device)
        # runs x B independent subsets without replacement: the top-k of uniform keys.
        keys = torch.rand(runs, b, p, generator=gen, device=x.device)
        subsets = keys.topk(subset_size, dim=2).indices.transpose(0, 1)  # [B, runs, s]
    else:
        if subsets.ndim != 3 or subsets.shape[0] != b or subsets.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"{method}: expected integer `subsets` of shape [{b}, runs, subset_size], "
                f"but got {tuple(subsets.shape)} of {subsets.dtype}."
            )
        subsets = subsets.to(x.device).long()
        if int(subsets.min()) < 0 or int(subsets.max()) >= p:
            raise ValueError(f"{method}: `subsets` index outside [0, {p}).")
    runs = subsets.shape[1]
    attr_sums = scores.gather(1, subsets.flatten(1)).view(b, runs, -1).sum(dim=2)  # [B, runs]
    base = make_baseline_for(baseline, x, method=method).expand_as(x)
    m = maps.shape[1]
    f = score_fn(model, softmax)
    drops = []
    with observe(model), torch.no_grad():
        original = f(x, tgt)
        for sl in step_chunks(runs, b, batch_size):
            sub = subsets[:, sl].transpose(0, 1)  # [r, B, s]
            removed = torch.zeros(sub.shape[0], b, p, dtype=torch.bool, device=x.device)
            removed.scatter_(2, sub, True)
            removed = removed.view(-1, b, m, h, w)
            xp = torch.where(removed, base.unsqueeze(0), x.unsqueeze(0)).reshape(-1, c, h, w)
            drops.append(original.unsqueeze(0) - f(xp, tgt.repeat(sub.shape[0])).view(-1, b))
    return _pearson(attr_sums, torch.cat(drops).T)


# ---------------------------------------------------------------------------------------------
# infidelity
# ---------------------------------------------------------------------------------------------
def infidelity(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    runs: int = 16,
    noise_std: float = 0.1,
    normalize: bool = True,
    softmax: bool = False,
    seed: int = 0,
    perturbations: Tensor | None = None,
    batch_size: int | None = 256,
) -> Tensor:
    """Infidelity (Yeh et al. 2019): ``E_I[(I . phi - (f(x) - f(x - I)))^2]`` with Gaussian
    perturbations ``I ~ N(0, noise_std^2)``.

    Lower is better. With ``normalize`` the attribution is first rescaled by the optimal
    ``beta = E[I.phi * df] / E[(I.phi)^2]`` (as captum's ``normalize=True``), so the score does not
    depend on the map's scale. One-channel maps are broadcast over the input channels.
    Cost: ``runs + 1`` forward passes.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1, H, W]`` or ``[B, C, H, W]`` maps.
        target: Class per input; ``None`` for the prediction.
        runs: Number of perturbations per input.
        noise_std: Standard deviation of the Gaussian perturbation.
        normalize: Rescale the explained change by the optimal ``beta``.
        softmax: Softmax probability instead of the logit.
        seed: Seed of the private generator.
        perturbations: Optional ``[runs, B, C, H, W]`` perturbations ``I`` to use instead of drawing.
        batch_size: Most perturbed images per forward pass.

    Returns:
        ``[B]`` non-negative errors.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
        >>> x = torch.rand(2, 1, 2, 2)
        >>> # a linear model's gradient explains every perturbation exactly
        >>> phi = model[1].weight.detach().view(1, 1, 2, 2).expand(2, 1, 2, 2)
        >>> bool(infidelity(model, x, phi, 0, normalize=False).abs().max() < 1e-10)
        True
    """
    method = "infidelity"
    check_int("runs", runs, 1)
    check_float("noise_std", noise_std, 0.0)
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    maps = check_maps_like(attributions, inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    b, c, h, w = x.shape
    if perturbations is None:
        gen = generator_for(seed, x.device)
        perturbations = torch.randn(runs, b, c, h, w, generator=gen, device=x.device, dtype=x.dtype) * noise_std
    elif perturbations.ndim != 5 or perturbations.shape[1:] != x.shape:
        raise ValueError(
            f"{method}: expected `perturbations` of shape [runs, {b}, {c}, {h}, {w}], "
            f"but got {tuple(perturbations.shape)}."
        )
    perturbations = perturbations.to(x.device, x.dtype)
    runs = perturbations.shape[0]
    phi = maps.to(x.device, torch.float64)
    explained = (perturbations.to(torch.float64) * phi.unsqueeze(0)).flatten(2).sum(dim=2)  # [runs, B]
    f = score_fn(model, softmax)
    diffs = []
    with observe(model), torch.no_grad():
        original = f(x, tgt)
        for sl in step_chunks(runs, b, batch_size):
            xp = (x.unsqueeze(0) - perturbations[sl]).reshape(-1, c, h, w)
            diffs.append(original.unsqueeze(0) - f(xp, tgt.repeat(xp.shape[0] // b)).view(-1, b))
    diff = torch.cat(diffs).to(torch.float64)  # [runs, B]
    if normalize:
        beta = (explained * diff).mean(dim=0) / (explained * explained).mean(dim=0).clamp_min(1e-300)
        explained = explained * beta
    return ((explained - diff) ** 2).mean(dim=0).to(x.dtype)
