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


_NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


def linear_imputation(
    inputs: Tensor,
    removed: Tensor,
    *,
    tol: float = 1e-8,
    max_iterations: int | None = None,
    noise_std: float = 0.0,
    seed: int = 0,
) -> Tensor:
    """Fill ``removed`` pixels of ``inputs`` ``[N, C, H, W]`` with ROAD's linear imputation:
    every removed pixel equals the weighted mean of its neighbours inside the image (direct
    neighbours weight 1/6, diagonal ones 1/12), plus optional Gaussian noise (``noise_std``).

    The removed pixels of each image and channel are the solution of a sparse linear system
    ``(D - W) u = W_known v`` (``D``: each pixel's in-image neighbour weight; ``W``: the weights
    between removed pixels; the right side: the weighted known neighbours). The matrix is
    symmetric and diagonally dominant, positive definite wherever a removed region touches a
    known pixel, so it is solved exactly (to ``tol``) by conjugate gradients with a diagonal
    preconditioner, batched over every image and channel at once (one 3x3 convolution per
    iteration, no per-pixel loop), in float64 (float32 on MPS, which lacks it), until the
    residual of every system is below ``tol`` times its right side's norm. This is the system
    quantus ``noisy_linear_imputation`` solves with a sparse direct solver (scipy ``spsolve``, one
    image at a time).

    Kept pixels are unchanged. A constant image stays constant.

    Args:
        inputs: ``[N, C, H, W]`` images.
        removed: Boolean mask broadcastable to ``inputs`` (``[N, 1, H, W]`` for every channel).
        tol: Relative residual at which the solver stops.
        max_iterations: Most conjugate-gradient iterations (default: the number of pixels, the
            exact-arithmetic bound); the solver stops earlier once converged.
        noise_std: Standard deviation of the Gaussian noise added to the imputed pixels.
        seed: Seed of the noise.

    Returns:
        The filled ``[N, C, H, W]`` images, in the dtype of ``inputs``.

    Example:
        >>> x = torch.ones(1, 1, 4, 4); r = torch.zeros(1, 1, 4, 4, dtype=torch.bool); r[..., 1:3, 1:3] = True
        >>> torch.allclose(linear_imputation(x.masked_fill(r, 0.0), r), x)
        True
    """
    tol = check_float("tol", tol, 0.0)
    check_int("max_iterations", max_iterations, 1, allow_none=True)
    check_float("noise_std", noise_std, 0.0)
    inputs = check_batch("inputs", inputs, method="linear_imputation")
    n, c, h, w = inputs.shape
    if not isinstance(removed, Tensor):
        raise TypeError(f"linear_imputation: expected `removed` to be a Tensor, but got {type(removed).__name__}.")
    try:
        mask = removed.to(device=inputs.device, dtype=torch.bool).expand(n, c, h, w)
    except RuntimeError:
        raise ValueError(
            f"linear_imputation: `removed` of shape {tuple(removed.shape)} does not broadcast to the inputs "
            f"{tuple(inputs.shape)}."
        ) from None
    # float64 wherever the device has it (the solve is memory-bound: twice the bytes, not 32x the time)
    dtype = torch.float32 if inputs.device.type == "mps" else torch.float64
    if dtype == torch.float32:
        tol = max(tol, 1e-6)
    x = inputs.detach().to(dtype).reshape(n * c, 1, h, w)
    r_mask = mask.reshape(n * c, 1, h, w)
    known = x.masked_fill(r_mask, 0.0)
    kernel = torch.tensor(_NEIGHBOUR_WEIGHTS, dtype=dtype, device=x.device).view(1, 1, 3, 3)

    def neighbours(u: Tensor) -> Tensor:  # the weighted sum of each pixel's in-image neighbours
        if u.device.type != "cpu":
            return F.conv2d(u, kernel, padding=1)
        p = F.pad(u, (1, 1, 1, 1))  # on a CPU, eight shifted adds beat a float64 convolution (2x)
        direct = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
        diagonal = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
        return direct * _NEIGHBOUR_WEIGHTS[0][1] + diagonal * _NEIGHBOUR_WEIGHTS[0][0]

    degree = neighbours(torch.ones(1, 1, h, w, dtype=dtype, device=x.device))  # in-image neighbour weight
    keep = r_mask.to(dtype)

    def apply(u: Tensor) -> Tensor:  # (D - W) u on the removed pixels
        return keep * (degree * u - neighbours(u))

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).flatten(1).sum(dim=1).view(-1, 1, 1, 1)

    rhs = keep * neighbours(known)
    u = torch.zeros_like(x)
    residual = rhs.clone()
    z = residual / degree
    direction = z.clone()
    rz = dot(residual, z)
    limit = (tol * dot(rhs, rhs).sqrt()).clamp_min(torch.finfo(dtype).tiny)
    for _ in range(max_iterations or h * w):
        active = dot(residual, residual).sqrt() > limit
        if not bool(active.any()):
            break
        a_dir = apply(direction)
        denom = dot(direction, a_dir)
        alpha = torch.where(active & (denom > 0), rz / denom.clamp_min(torch.finfo(dtype).tiny), 0.0)
        u = u + alpha * direction
        residual = residual - alpha * a_dir
        z = residual / degree
        rz_new = dot(residual, z)
        beta = torch.where(active, rz_new / rz.clamp_min(torch.finfo(dtype).tiny), 0.0)
        direction = z + beta * direction
        rz = rz_new
    filled = torch.where(r_mask, u, x).view(n, c, h, w).to(inputs.dtype)
    if noise_std > 0:
        noise = torch.randn(filled.shape, generator=generator_for(seed, filled.device), device=filled.device,
                            dtype=filled.dtype)  # fmt: skip
        filled = torch.where(mask, filled + noise_std * noise, filled)
    return filled


def _road_update(
    model: nn.Module,
    inputs: Tensor,
    attributions: Tensor,
    target: TargetType = None,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    order: str = "morf",
    noise_std: float = 0.01,
    tol: float = 1e-8,
    max_iterations: int | None = None,
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
            filled = linear_imputation(xs, m, tol=tol, max_iterations=max_iterations, noise_std=noise_std,
                                       seed=seed + sl.start)  # fmt: skip
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
    tol: float = 1e-8,
    max_iterations: int | None = None,
    softmax: bool = True,
    seed: int = 0,
    batch_size: int | None = 256,
) -> Tensor:
    """ROAD, RemOve And Debias (Rong et al. 2022): the target score after the top (``"morf"``) or
    bottom (``"lerf"``) ``fraction`` of pixels is replaced by a noisy linear imputation.

    For MoRF, a faster drop (lower curve) is more faithful; compare with ``order="random"``.
    Cost: one forward per fraction (in chunks) plus the batched imputation solve.

    Against quantus ``ROAD`` (checked in the tests with ``noise_std=0``, to 1e-5): the imputed
    images are the same, with three differences of convention. quantus reports accuracy
    (``argmax == label``) averaged over the batch, this function the per-sample target score
    (the accuracy is one ``argmax`` away); quantus removes ``int(p * H * W / 100)`` pixels for a
    percentage ``p`` (truncation), this function ``round(fraction * H * W)``; and quantus takes
    single-channel maps (it indexes the flattened ``[C, H, W]`` map into ``H * W`` pixels), while
    here channels are summed into one map and every channel of a removed pixel is imputed.

    Args:
        model: Maps ``[B, C, H, W]`` to ``[B, K]`` scores.
        inputs: ``[B, C, H, W]`` images.
        attributions: ``[B, 1 or C, H, W]`` maps.
        target: Class per input; ``None`` for the prediction.
        fractions: Removed fractions, each in ``(0, 1)``.
        order: ``"morf"``, ``"lerf"`` or ``"random"``.
        noise_std: Noise added to imputed pixels.
        tol: Relative residual at which the imputation's linear solve stops (see
            :func:`linear_imputation`).
        max_iterations: Most conjugate-gradient iterations of that solve (default: the number of
            pixels).
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
        model, inputs, attributions, target, fractions=fractions, order=order, noise_std=noise_std, tol=tol,
        max_iterations=max_iterations, softmax=softmax, seed=seed, batch_size=batch_size,
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
