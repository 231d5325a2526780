"""Remove-and-evaluate: ROAD (Rong et al. 2022) without retraining, ROAR (Hooker et al. 2019) with it.

Both replace a fraction of each image's pixels, ranked by the map, and watch the model's
accuracy: if the map is right, removing its top pixels hurts more than removing random ones.
ROAR retrains a fresh model on the modified training set for every fraction (so the model cannot
merely be surprised by the removal pattern); ROAD avoids the retraining by filling removed pixels
with a noisy linear imputation from their neighbours, which leaks little about the mask's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType, observe
from lightning_xai.metrics.functional._common import (
    check_batch,
    check_maps_like,
    generator_for,
    pixel_scores,
    resolve,
    score_fn,
    step_chunks,
)

__all__ = ["removal_masks", "linear_imputation", "road", "roar", "DEFAULT_FRACTIONS"]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _check_fractions(fractions: Sequence[float], method: str) -> Tensor:
    if isinstance(fractions, (int, float)) or len(fractions) == 0:
        raise ValueError(f"{method}: expected a non-empty sequence of `fractions`, but got {fractions!r}.")
    for f in fractions:
        value = check_float("fractions", f)
        if not 0.0 < value < 1.0:
            raise ValueError(f"{method}: expected every fraction in (0, 1), but got {value}.")
    return torch.tensor([float(f) for f in fractions], dtype=torch.float64)


def removal_masks(attributions: Tensor, fractions: Sequence[float], order: str = "morf", seed: int = 0) -> Tensor:
    """``[F, B, 1, H, W]`` boolean masks of the pixels removed at each fraction.

    ``"morf"``: the top-attributed pixels (channels summed); ``"lerf"``: the least attributed;
    ``"random"``: a random ranking from a generator seeded with ``seed``.

    Example:
        >>> m = removal_masks(torch.arange(4.0).view(1, 1, 2, 2), [0.5])
        >>> m[0, 0, 0]
        tensor([[False, False],
                [ True,  True]])
    """
    method = "removal_masks"
    frac = _check_fractions(fractions, method)
    if order not in ("morf", "lerf", "random"):
        raise ValueError(f"{method}: expected `order` in ('morf', 'lerf', 'random'), but got {order!r}.")
    maps = check_batch("attributions", attributions, method=method)
    b, _, h, w = maps.shape
    scores = pixel_scores(maps)
    if order == "random":
        scores = torch.rand(scores.shape, generator=generator_for(seed, maps.device), device=maps.device)
    order_idx = torch.sort(scores, dim=1, descending=order != "lerf", stable=True).indices
    ranks = torch.empty_like(order_idx).scatter_(
        1, order_idx, torch.arange(h * w, device=maps.device).expand_as(order_idx)
    )
    counts = torch.round(frac * h * w).long().to(maps.device)
    return (ranks.unsqueeze(0) < counts.view(-1, 1, 1)).view(-1, b, 1, h, w)


def linear_imputation(inputs: Tensor, removed: Tensor, *, iterations: int = 64, noise_std: float = 0.0,
                      seed: int = 0) -> Tensor:  # fmt: skip
    """Fill ``removed`` pixels of ``inputs`` ``[N, C, H, W]`` with the weighted mean of their 8
    neighbours (direct ones weight 1/6, diagonal ones 1/12, as ROAD's linear imputation), solved
    by ``iterations`` batched Jacobi sweeps, plus optional Gaussian noise (``noise_std``).

    Kept pixels are unchanged. A constant image stays constant.

    Example:
        >>> x = torch.ones(1, 1, 4, 4); r = torch.zeros(1, 1, 4, 4, dtype=torch.bool); r[..., 1:3, 1:3] = True
        >>> torch.allclose(linear_imputation(x.masked_fill(r, 0.0), r), x)
        True
    """
    check_int("iterations", iterations, 1)
    check_float("noise_std", noise_std, 0.0)
    n, c, h, w = inputs.shape
    kernel = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]],
                          dtype=inputs.dtype, device=inputs.device).view(1, 1, 3, 3)  # fmt: skip
    removed = removed.expand(n, c, h, w)
    ones = torch.ones(1, 1, h, w, dtype=inputs.dtype, device=inputs.device)
    norm = F.conv2d(F.pad(ones, (1, 1, 1, 1)), kernel)  # neighbour weight inside the image
    flat_kernel = kernel.expand(c, 1, 3, 3)
    x = inputs.masked_fill(removed, 0.0)
    known_mean = (inputs * ~removed).flatten(2).sum(2) / (~removed).flatten(2).sum(2).clamp_min(1)
    x = torch.where(removed, known_mean.view(n, c, 1, 1).expand_as(x), x)
    for _ in range(iterations):
        avg = F.conv2d(F.pad(x, (1, 1, 1, 1)), flat_kernel, groups=c) / norm
        x = torch.where(removed, avg, inputs)
    if noise_std > 0:
        noise = torch.randn(x.shape, generator=generator_for(seed, x.device), device=x.device, dtype=x.dtype)
        x = torch.where(removed, x + noise_std * noise, x)
    return x


def _road_update(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    order: str = "morf",
    noise_std: float = 0.01,
    iterations: int = 64,
    softmax: bool = True,
    seed: int = 0,
    batch_size: int | None = 256,
) -> Tensor:
    method = "road"
    inputs = check_batch("inputs", inputs, method=method)
    maps = check_maps_like(attributions, inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    masks = removal_masks(maps.to(x.device), fractions, order=order, seed=seed)  # [F, B, 1, H, W]
    nf, b = masks.shape[:2]
    f = score_fn(model, softmax)
    out = []
    with observe(model), torch.no_grad():
        for sl in step_chunks(nf, b, batch_size):
            m = masks[sl].flatten(0, 1)
            xs = x.repeat(m.shape[0] // b, 1, 1, 1)
            filled = linear_imputation(xs, m, iterations=iterations, noise_std=noise_std, seed=seed + sl.start)
            out.append(f(filled, tgt.repeat(m.shape[0] // b)).view(-1, b))
    return torch.cat(out).T.contiguous()


def road(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    order: str = "morf",
    noise_std: float = 0.01,
    iterations: int = 64,
    softmax: bool = True,
    seed: int = 0,
    batch_size: int | None = 256,
) -> Tensor:
    """ROAD, RemOve And Debias (Rong et al. 2022): the target score after the top (``"morf"``) or
    bottom (``"lerf"``) ``fraction`` of pixels is replaced by a noisy linear imputation.

    For MoRF, a faster drop (lower curve) is more faithful; compare with ``order="random"``.
    Cost: one forward per fraction (in chunks) plus the batched imputation sweeps.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1 or C, H, W]`` maps.
        target: Class per input; ``None`` for the prediction.
        fractions: Removed fractions, each in ``(0, 1)``.
        order: ``"morf"``, ``"lerf"`` or ``"random"``.
        noise_std: Noise added to imputed pixels.
        iterations: Jacobi sweeps of the imputation.
        softmax: Softmax probability instead of the logit.
        seed: Seed of the noise (and of the random order).
        batch_size: Most perturbed images per forward pass.

    Returns:
        ``[B, F]`` scores.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> road(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), fractions=[0.25, 0.5]).shape
        torch.Size([2, 2])
    """
    return _road_update(
        model, inputs, attributions, target, fractions=fractions, order=order, noise_std=noise_std,
        iterations=iterations, softmax=softmax, seed=seed, batch_size=batch_size,
    )  # fmt: skip


def roar(
    fit: Callable[[Tensor, Tensor], nn.Module],
    train_inputs: Tensor,
    train_labels: Tensor,
    train_maps: Tensor,
    test_inputs: Tensor,
    test_labels: Tensor,
    test_maps: Tensor,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """ROAR, RemOve And Retrain (Hooker et al. 2019).

    For each fraction, the top-attributed pixels of every training and test image are replaced
    by the per-channel dataset mean, ``fit(train_inputs, train_labels)`` trains a fresh model on
    the modified training set, and its test accuracy is measured; the same with a random
    ranking. A map is informative when its accuracy falls faster than the random one.
    ``fit`` is yours: the example ``examples/metrics_sanity.py`` trains a copy with a Lightning
    Trainer (this library never imports Lightning). Cost: ``2 * len(fractions)`` trainings.

    Args:
        fit: ``fit(images, labels) -> trained model``.
        train_inputs: ``[N, C, H, W]`` training images; ``train_labels`` ``[N]``.
        train_labels: ``[N]`` labels.
        train_maps: ``[N, 1 or C, H, W]`` maps of the training images.
        test_inputs: ``[M, C, H, W]`` test images.
        test_labels: ``[M]`` labels.
        test_maps: ``[M, 1 or C, H, W]`` maps of the test images.
        fractions: Removed fractions, each in ``(0, 1)``.
        seed: Seed of the random ranking.
        batch_size: Images per evaluation forward.

    Returns:
        ``(accuracy_with_the_maps, accuracy_random)``, each ``[F]``.
    """
    method = "roar"
    if not callable(fit):
        raise TypeError(f"{method}: expected `fit` to be callable as fit(images, labels) -> model.")
    check_int("batch_size", batch_size, 1)
    train_inputs = check_batch("train_inputs", train_inputs, method=method)
    test_inputs = check_batch("test_inputs", test_inputs, method=method)
    check_maps_like(train_maps, train_inputs, method=method, name="train_maps")
    check_maps_like(test_maps, test_inputs, method=method, name="test_maps")
    mean = train_inputs.mean(dim=(0, 2, 3), keepdim=True)
    results = []
    for order in ("morf", "random"):
        tr_masks = removal_masks(train_maps, fractions, order=order, seed=seed)
        te_masks = removal_masks(test_maps, fractions, order=order, seed=seed + 1)
        accs = []
        for i in range(tr_masks.shape[0]):
            model = fit(torch.where(tr_masks[i], mean, train_inputs), train_labels)
            x_test = torch.where(te_masks[i], mean, test_inputs)
            correct = 0
            with observe(model), torch.no_grad():
                for start in range(0, x_test.shape[0], batch_size):
                    xb = x_test[start : start + batch_size].to(next(model.parameters()).device)
                    pred = model(xb).argmax(dim=1).cpu()
                    correct += int((pred == test_labels[start : start + batch_size].cpu()).sum())
            accs.append(correct / x_test.shape[0])
        results.append(torch.tensor(accs))
    return results[0], results[1]
