"""Remove-and-evaluate: ROAD (Rong et al. 2022) without retraining, ROAR (Hooker et al. 2019) with it.

Both replace a fraction of each image's pixels, ranked by the map, and watch the model's
accuracy: if the map is right, removing its top pixels hurts more than removing random ones.
ROAR retrains a fresh model on the modified training set for every fraction (so the model cannot
merely be surprised by the removal pattern); ROAD avoids the retraining by filling removed pixels
with a noisy linear imputation from their neighbours, which leaks little about the mask's shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType, model_device, observe
from lightning_xai.attribution.sampling import progress_bar
from lightning_xai.metrics.functional._common import (
    check_batch,
    check_maps_like,
    generator_for,
    inverse_order,
    pixel_scores,
    resolve,
    score_fn,
    step_chunks,
)

__all__ = ["removal_masks", "linear_imputation", "road", "roar", "DEFAULT_FRACTIONS"]

_log = logging.getLogger(__name__)

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

    Examples:
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
    ranks = inverse_order(torch.sort(scores, dim=1, descending=order != "lerf", stable=True).indices)
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

    Examples:
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
    keep = r_mask.to(dtype)
    kernel = torch.tensor(_NEIGHBOUR_WEIGHTS, dtype=dtype, device=x.device).view(1, 1, 3, 3)
    direct_w, diagonal_w = _NEIGHBOUR_WEIGHTS[0][1], _NEIGHBOUR_WEIGHTS[0][0]
    # The solve is memory-bound: every iteration works in place on buffers allocated once (on a
    # CPU, fresh allocations of this size cost page faults: 2x the time of the arithmetic).
    padded = x.new_zeros(n * c, 1, h + 2, w + 2)
    inner = padded[..., 1:-1, 1:-1]
    scratch = torch.empty_like(x)

    def neighbours(u: Tensor, out: Tensor) -> Tensor:  # the weighted sum of each pixel's in-image neighbours
        if u.device.type != "cpu":
            return out.copy_(F.conv2d(u, kernel, padding=1))
        inner.copy_(u)  # on a CPU, eight shifted adds beat a float64 convolution (2x)
        p = padded
        torch.add(p[..., :-2, 1:-1], p[..., 2:, 1:-1], out=out).add_(p[..., 1:-1, :-2]).add_(p[..., 1:-1, 2:])
        torch.add(p[..., :-2, :-2], p[..., :-2, 2:], out=scratch).add_(p[..., 2:, :-2]).add_(p[..., 2:, 2:])
        return out.mul_(direct_w).add_(scratch, alpha=diagonal_w)

    def dot(a: Tensor, b: Tensor) -> Tensor:
        return torch.einsum("nchw,nchw->n", a, b).view(-1, 1, 1, 1)

    ones = torch.ones(1, 1, h, w, dtype=dtype, device=x.device)
    degree = F.conv2d(F.pad(ones, (1, 1, 1, 1)), kernel)  # in-image neighbour weight
    inv_degree = degree.reciprocal()
    rhs = neighbours(x.masked_fill(r_mask, 0.0), torch.empty_like(x)).mul_(keep)
    u = torch.zeros_like(x)
    residual = rhs.clone()
    z = residual * inv_degree
    direction = z.clone()
    a_dir = torch.empty_like(x)
    rz = dot(residual, z)
    tiny = torch.finfo(dtype).tiny
    limit = (tol * dot(rhs, rhs).sqrt()).clamp_min(tiny)
    for _ in range(max_iterations or h * w):
        active = dot(residual, residual).sqrt() > limit
        if not bool(active.any()):
            break
        neighbours(direction, a_dir)  # a_dir = (D - W) direction on the removed pixels
        a_dir.addcmul_(degree, direction, value=-1.0).neg_().mul_(keep)
        denom = dot(direction, a_dir)
        alpha = torch.where(active & (denom > 0), rz / denom.clamp_min(tiny), 0.0)
        u.addcmul_(alpha, direction)
        residual.addcmul_(alpha, a_dir, value=-1.0)
        torch.mul(residual, inv_degree, out=z)
        rz_new = dot(residual, z)
        beta = torch.where(active, rz_new / rz.clamp_min(tiny), 0.0)
        direction.mul_(beta).add_(z)
        rz = rz_new
    filled = torch.where(r_mask, u, x).view(n, c, h, w).to(inputs.dtype)
    if noise_std > 0:
        noise = torch.randn(filled.shape, generator=generator_for(seed, filled.device), device=filled.device,
                            dtype=filled.dtype)  # fmt: skip
        filled = torch.where(mask, filled + noise_std * noise, filled)
    return filled


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

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> road(model, torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4), fractions=[0.25, 0.5]).shape
        torch.Size([2, 2])
    """
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


def _roar_fill(fill: float | str | Tensor, train_inputs: Tensor) -> Tensor:
    """The replacement value of removed pixels, broadcastable to ``[N, C, H, W]``."""
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"roar: expected `fill` to be 'mean', a float or a Tensor, but got {fill!r}.")
        # the per-channel mean of the unmodified training images (Hooker et al.), in float64
        return train_inputs.double().mean(dim=(0, 2, 3), keepdim=True).to(train_inputs.dtype)
    if isinstance(fill, Tensor):
        c, h, w = train_inputs.shape[1:]
        try:
            torch.broadcast_shapes(fill.shape, (1, c, h, w))
        except RuntimeError:
            raise ValueError(
                f"roar: `fill` of shape {tuple(fill.shape)} does not broadcast to one image [1, {c}, {h}, {w}]."
            ) from None
        return fill.detach().to(device=train_inputs.device, dtype=train_inputs.dtype)
    value = check_float("fill", fill)
    return torch.full((1, 1, 1, 1), value, dtype=train_inputs.dtype, device=train_inputs.device)


def _roar_ranks(maps: Tensor, order: str, seed: int) -> Tensor:
    """``[N, H*W]`` removal rank of each pixel (0 = removed first): by the channel-summed map,
    highest first (``"morf"``), or at random (``"random"``). Ties (flat zero-attribution
    backgrounds) are broken at random, not in raster order, so no image corner is favoured."""
    scores = pixel_scores(maps)
    key = torch.rand(scores.shape, generator=generator_for(seed, scores.device), device=scores.device)
    if order == "random":
        idx = torch.argsort(key, dim=1)
    else:  # a random permutation, then a stable sort by score: ties stay in random order
        perm = torch.argsort(key, dim=1)
        idx = perm.gather(1, torch.sort(scores.gather(1, perm), dim=1, descending=True, stable=True).indices)
    return inverse_order(idx)


def _roar_retrain(fit: Callable[[Tensor, Tensor], nn.Module], images: Tensor, labels: Tensor, seed: int) -> nn.Module:
    """``fit(images, labels)`` with the global torch RNG seeded with ``seed`` (so every retraining
    starts from the same initialisation and shuffling) and restored to the caller's state after."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        model = fit(images, labels)
    if not isinstance(model, nn.Module):
        raise TypeError(f"roar: expected `fit` to return an nn.Module, but got {type(model).__name__}.")
    return model


def _roar_accuracy(model: nn.Module, inputs: Tensor, labels: Tensor, batch_size: int) -> float:
    """Top-1 accuracy of ``model`` on ``inputs``, one forward per ``batch_size`` images."""
    device = model_device(model)
    correct = 0
    with observe(model), torch.no_grad():
        for start in range(0, inputs.shape[0], batch_size):
            out = model(inputs[start : start + batch_size].to(device))
            if out.ndim != 2:
                raise ValueError(
                    f"roar: expected the model to return [batch, classes] scores, but got {tuple(out.shape)}."
                )
            correct += int((out.argmax(dim=1) == labels[start : start + batch_size].to(device)).sum())
    return correct / max(inputs.shape[0], 1)


def _check_labels(name: str, labels: object, n: int) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"roar: expected `{name}` to be a Tensor, but got {type(labels).__name__}.")
    if labels.shape != (n,) or labels.is_floating_point():
        raise ValueError(f"roar: expected `{name}` of shape [{n}] with integer classes, but got {tuple(labels.shape)} "
                         f"of dtype {labels.dtype}.")  # fmt: skip
    return labels


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
    fill: float | str | Tensor = "mean",
    seed: int = 0,
    batch_size: int = 256,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """ROAR, RemOve And Retrain (Hooker et al. 2019).

    For each fraction, the top-attributed pixels (channel-summed map, ties broken at random) of
    every training and test image are replaced by ``fill`` (the per-channel mean of the training
    images, as in the paper), ``fit(train_inputs, train_labels)`` trains a fresh model on the
    modified training set, and its accuracy on the modified test set is measured; then the same
    with a random ranking per image. A map is informative when its accuracy falls faster than
    the random one. Rank by magnitude by passing ``maps.abs()``.

    ``fit`` is yours (this library never imports Lightning): build a fresh model and train it,
    e.g. with a Lightning ``Trainer`` whose kwargs you bind with :func:`functools.partial`
    (``examples/roar_digits.py``). Every call starts with the global torch RNG seeded with
    ``seed`` (the caller's RNG state is restored afterwards), so all ``2 * len(fractions)``
    retrainings share their initialisation and data order and a run is repeatable. Rankings
    are computed once for all fractions, masks are applied to the whole set at once, test
    accuracy is one forward per ``batch_size`` images; each result is logged (``logging``, at
    INFO, logger ``lightning_xai.metrics.functional.removal``). Cost: ``2 * len(fractions)``
    trainings.

    Caveat (Rong et al. 2022): the removal pattern itself can carry the class. Where the fill is
    distinguishable from the kept pixels (a mean-grey silhouette of a removed digit on a black
    background), a retrained model reads the shape of the hole and the map's curve stays high;
    choose ``fill`` as a value that carries no information for your data (the background), or
    use :func:`road`.

    Args:
        fit: ``fit(images, labels) -> trained model`` (a fresh one each call).
        train_inputs: ``[N, C, H, W]`` training images.
        train_labels: ``[N]`` integer labels.
        train_maps: ``[N, 1 or C, H, W]`` maps of the training images.
        test_inputs: ``[M, C, H, W]`` test images.
        test_labels: ``[M]`` integer labels.
        test_maps: ``[M, 1 or C, H, W]`` maps of the test images.
        fractions: Removed fractions of the pixels, each in ``(0, 1)``.
        fill: ``"mean"`` (per-channel mean of ``train_inputs``), a float, or a Tensor
            broadcastable to one image ``[1, C, H, W]``.
        seed: Seed of the retrainings, of the random rankings and of the tie-breaking.
        batch_size: Test images per evaluation forward.
        progress: Show a tqdm progress bar over the retrainings.

    Returns:
        ``(accuracy_with_the_maps, accuracy_random)``, each ``[F]`` test accuracies.

    Raises:
        TypeError: ``fit`` is not callable or returns no ``nn.Module``; inputs or labels are not
            Tensors.
        ValueError: mismatched shapes, a fraction outside ``(0, 1)`` or a bad ``fill``.
        LightningXAIError: NaN or infinite maps.

    Examples:
        >>> def fit(images, labels):  # a stand-in that does not train
        ...     return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> acc, rnd = roar(fit, x, y, x, x, y, x, fractions=[0.25, 0.5])
        >>> acc.shape, rnd.shape
        (torch.Size([2]), torch.Size([2]))
    """
    method = "roar"
    if not callable(fit):
        raise TypeError(f"{method}: expected `fit` to be callable as fit(images, labels) -> model, but got {fit!r}.")
    frac = _check_fractions(fractions, method)
    check_int("batch_size", batch_size, 1)
    check_int("seed", seed, 0)
    train_inputs = check_batch("train_inputs", train_inputs, method=method).detach()
    test_inputs = check_batch("test_inputs", test_inputs, method=method).detach()
    if test_inputs.shape[1:] != train_inputs.shape[1:]:
        raise ValueError(f"{method}: expected test images of shape [M, {', '.join(map(str, train_inputs.shape[1:]))}] "
                         f"like the training images, but got {tuple(test_inputs.shape)}.")  # fmt: skip
    train_labels = _check_labels("train_labels", train_labels, train_inputs.shape[0])
    test_labels = _check_labels("test_labels", test_labels, test_inputs.shape[0])
    train_maps = check_maps_like(train_maps, train_inputs, method=method, name="train_maps").to(train_inputs.device)
    test_maps = check_maps_like(test_maps, test_inputs, method=method, name="test_maps").to(test_inputs.device)
    value = _roar_fill(fill, train_inputs)
    test_value = value.to(test_inputs.device)
    h, w = train_inputs.shape[-2:]
    counts = torch.round(frac * h * w).long().tolist()
    results = []
    with progress_bar(2 * len(counts), progress, "roar retrainings") as advance:
        for k, order in enumerate(("morf", "random")):
            tr_ranks = _roar_ranks(train_maps, order, seed + 2 * k).view(-1, 1, h, w)
            te_ranks = _roar_ranks(test_maps, order, seed + 2 * k + 1).view(-1, 1, h, w)
            accs = []
            for fraction, count in zip(frac.tolist(), counts):
                start = time.perf_counter()
                model = _roar_retrain(fit, torch.where(tr_ranks < count, value, train_inputs), train_labels, seed)
                acc = _roar_accuracy(model, torch.where(te_ranks < count, test_value, test_inputs), test_labels,
                                     batch_size)  # fmt: skip
                accs.append(acc)
                _log.info("roar: %s order, %.0f%% of the pixels removed: test accuracy %.4f (retrained in %.1f s)",
                          order, 100 * fraction, acc, time.perf_counter() - start)  # fmt: skip
                advance(1)
            results.append(torch.tensor(accs))
    return results[0], results[1]
