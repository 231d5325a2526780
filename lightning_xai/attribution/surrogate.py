"""Surrogate explainers over superpixels: LIME, Kernel SHAP, Anchors, and XRAI's region ranking.

The interpretable features are superpixels from scikit-image (:func:`superpixels`: ``"slic"``,
``"quickshift"`` or ``"felzenszwalb"``, chosen by name, or any callable). A coalition
``z in {0, 1}^K`` keeps the superpixels where ``z = 1`` and replaces the others by a baseline
(``z[segments] * x + (1 - z[segments]) * baseline``, captum's transform). All coalitions of a
batch go through the model in chunks of ``internal_batch_size`` rows; the surrogate fits are solved in
torch, batched over the inputs (float64).

* :class:`LIME` (Ribeiro, Singh & Guestrin 2016): weighted ridge regression on random binary
  coalitions, exponential kernel on the cosine distance to the full coalition.
* :class:`KernelSHAP` (Lundberg & Lee 2017): Shapley-kernel weighted regression with the
  efficiency constraint ``sum(phi) = f(x) - f(baseline)`` enforced exactly; exhaustive (exact
  Shapley values) when ``2^K - 2 <= n_samples``.
* :class:`Anchors` (Ribeiro, Singh & Guestrin 2018): the smallest set of superpixels that keeps
  the prediction with precision >= ``threshold`` at confidence ``1 - delta`` (KL-LUCB inside a
  beam search).
* :class:`XRAI` (Kapishnikov et al. 2019): over-segment at several scales, rank regions by
  integrated gradients with black and white baselines, grow the region set greedily.

Segments and coalitions can be injected (``attribute(..., segments=..., samples=...)``), which is
how the tests compare with captum on identical inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution._sampling import (
    check_chunk_size,
    default_chunk_size,
    evaluate_rows,
    generator,
    progress_bar,
    target_scores,
)
from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    OutputType,
    TargetType,
    chunks,
    resolve_target,
)
from lightning_xai.attribution.path import IntegratedGradients

__all__ = [
    "SEGMENTATIONS",
    "AnchorResult",
    "Anchors",
    "KernelSHAP",
    "LIME",
    "XRAI",
    "lime_kernel",
    "shapley_kernel",
    "superpixels",
]

SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb", "grid")
"""The segmentations :func:`superpixels` knows by name: three from scikit-image, and a regular
grid of square cells (no scikit-image; for noise-like inputs, where the others return one
segment)."""

SegmentationType = Union[str, Callable[[Tensor], Tensor]]
BaselineType = Union[float, Tensor, str]


# --------------------------------------------------------------------------------------------
# superpixels
# --------------------------------------------------------------------------------------------
def _skimage_segmentation() -> Any:
    try:
        import skimage.segmentation as segmentation
    except ImportError as err:  # pragma: no cover - scikit-image is a dependency
        raise ImportError(
            "Superpixels need scikit-image: pip install scikit-image (or `pip install lightning-xai`)."
        ) from err
    return segmentation


def _check_segmentation(segmentation: Any) -> None:
    if isinstance(segmentation, str):
        if segmentation not in SEGMENTATIONS:
            raise ValueError(
                f"Expected argument `segmentation` to be one of {list(SEGMENTATIONS)} or a callable, but got "
                f"{segmentation!r}."
            )
    elif not callable(segmentation):
        raise TypeError(
            f"Expected argument `segmentation` to be a name or a callable, but got {type(segmentation).__name__}."
        )


def _relabel(labels: np.ndarray) -> np.ndarray:
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape)


def superpixels(images: Tensor, method: str = "slic", **kwargs: Any) -> Tensor:
    """Superpixels of each image with scikit-image, labels ``0 .. K_i - 1``.

    Each image is min-max scaled to ``[0, 1]`` for the segmentation only. Defaults (overridden
    by ``kwargs``): ``slic``: ``n_segments=50, compactness=10``; ``quickshift``: LIME's
    ``kernel_size=4, max_dist=200, ratio=0.2`` (grey images repeated to RGB);
    ``felzenszwalb``: ``scale=100, sigma=0.5, min_size=20``; ``grid``: ``cell_size=8`` (square
    cells, row-major labels). On noise images scikit-image's methods may return a single segment.

    Args:
        images: ``[B, C, H, W]`` images (1 or 3 channels for quickshift).
        method: One of :data:`SEGMENTATIONS`.
        **kwargs: Passed to the scikit-image function.

    Returns:
        ``[B, H, W]`` int64 labels on the images' device.

    Raises:
        ValueError: unknown ``method`` or images not ``[B, C, H, W]``.

    Examples:
        >>> superpixels(torch.rand(2, 3, 16, 16), "slic", n_segments=8).shape
        torch.Size([2, 16, 16])
    """
    _check_segmentation(method)
    if images.ndim != 4:
        raise ValueError(f"Superpixels need images [B, C, H, W], but got shape {tuple(images.shape)}.")
    if method == "grid":
        cell = check_int("cell_size", kwargs.get("cell_size", 8), 1)
        height, width = images.shape[-2:]
        rows = torch.arange(height, device=images.device) // cell
        cols = torch.arange(width, device=images.device) // cell
        labels = rows[:, None] * math.ceil(width / cell) + cols[None, :]
        return labels.expand(images.shape[0], -1, -1).clone()
    segmentation = _skimage_segmentation()
    x = images.detach().to("cpu", torch.float64)
    low = x.flatten(1).amin(1).view(-1, 1, 1, 1)
    high = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    x = ((x - low) / (high - low).clamp(min=1e-12)).permute(0, 2, 3, 1).numpy()
    grey = x.shape[-1] == 1
    out = []
    for image in x:
        if method == "slic":
            args = {"n_segments": 50, "compactness": 10.0, "start_label": 0, **kwargs}
            labels = segmentation.slic(image[..., 0] if grey else image, channel_axis=None if grey else -1, **args)
        elif method == "quickshift":
            args = {"kernel_size": 4, "max_dist": 200, "ratio": 0.2, "rng": 0, **kwargs}
            rgb = np.repeat(image, 3, axis=-1) if grey else image
            labels = segmentation.quickshift(rgb, channel_axis=-1, **args)
        else:
            args = {"scale": 100.0, "sigma": 0.5, "min_size": 20, **kwargs}
            labels = segmentation.felzenszwalb(
                image[..., 0] if grey else image, channel_axis=None if grey else -1, **args
            )
        out.append(_relabel(np.asarray(labels)))
    return torch.as_tensor(np.stack(out), dtype=torch.long, device=images.device)


def _check_segments(segments: Tensor, inputs: Tensor) -> Tensor:
    if not isinstance(segments, Tensor):
        raise TypeError(f"Expected `segments` to be a Tensor, but got {type(segments).__name__}.")
    segments = segments.to(inputs.device)
    if segments.ndim == 4 and segments.shape[1] == 1:
        segments = segments[:, 0]
    if segments.shape != (inputs.shape[0], *inputs.shape[-2:]):
        raise ValueError(
            f"Expected `segments` of shape {(inputs.shape[0], *inputs.shape[-2:])}, but got {tuple(segments.shape)}."
        )
    if segments.is_floating_point() or int(segments.min()) < 0:
        raise ValueError("Expected `segments` to hold non-negative integer labels.")
    return segments.long()


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------
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


def shapley_kernel(k: int, sizes: Tensor) -> Tensor:
    """The Shapley kernel ``(K - 1) / (C(K, s) s (K - s))`` for coalition sizes ``0 < s < K``."""
    s = sizes.double()
    log_comb = math.lgamma(k + 1) - torch.lgamma(s + 1) - torch.lgamma(k - s + 1)
    return (k - 1) / (torch.exp(log_comb) * s * (k - s))


# --------------------------------------------------------------------------------------------
# the shared superpixel machinery
# --------------------------------------------------------------------------------------------
def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"Expected argument `{name}` to be a bool, but got {value!r}.")
    return value


class _SuperpixelExplainer(Explainer):
    """Superpixels, baselines and chunked evaluation of coalitions."""

    region: ClassVar[bool] = True
    signed: ClassVar[bool] = True

    def __init__(
        self,
        segmentation: SegmentationType,
        segmentation_kwargs: dict[str, Any] | None,
        baseline: BaselineType,
        seed: int,
        internal_batch_size: int | None,
        progress: bool,
    ) -> None:
        _check_segmentation(segmentation)
        self.segmentation = segmentation
        if segmentation_kwargs is not None and not isinstance(segmentation_kwargs, dict):
            raise TypeError(
                f"Expected `segmentation_kwargs` to be a dict, but got {type(segmentation_kwargs).__name__}."
            )
        self.segmentation_kwargs = dict(segmentation_kwargs or {})
        if isinstance(baseline, str):
            if baseline != "mean":
                raise ValueError(
                    f"Expected argument `baseline` to be a float, a Tensor or 'mean', but got {baseline!r}."
                )
            self.baseline: BaselineType = baseline
        elif isinstance(baseline, Tensor):
            if not baseline.is_floating_point():
                raise TypeError(f"Expected a floating-point baseline tensor, but got dtype {baseline.dtype}.")
            self.baseline = baseline.detach()
        else:
            self.baseline = check_float("baseline", baseline)
        self.seed = check_int("seed", seed, 0)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def segments(self, inputs: Tensor) -> Tensor:
        """The ``[B, H, W]`` superpixel labels this explainer uses for ``inputs``."""
        if isinstance(self.segmentation, str):
            return superpixels(inputs, self.segmentation, **self.segmentation_kwargs)
        labels = self.segmentation(inputs.detach())
        return torch.stack([torch.as_tensor(_relabel(np.asarray(s.cpu())), device=inputs.device) for s in labels])

    def _baseline(self, x: Tensor, segments: Tensor) -> Tensor:
        if isinstance(self.baseline, str):  # each superpixel's mean colour (LIME's hide_color=None)
            k = int(segments.max()) + 1
            flat = segments.view(x.shape[0], 1, -1).expand(-1, x.shape[1], -1)
            sums = x.new_zeros(x.shape[0], x.shape[1], k).scatter_add_(2, flat, x.flatten(2))
            counts = x.new_zeros(x.shape[0], 1, k).scatter_add_(2, flat[:, :1], torch.ones_like(x[:, :1].flatten(2)))
            return (sums / counts.clamp(min=1)).gather(2, flat).view_as(x)
        try:
            return torch.broadcast_to(torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device), x.shape)
        except RuntimeError:
            raise ValueError(
                f"{type(self).__name__}: the baseline of shape {tuple(torch.as_tensor(self.baseline).shape)} does not "
                f"broadcast to the inputs' shape {tuple(x.shape)}."
            ) from None

    def _prepare(self, inputs: Tensor, segments: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(x, segments [B, H, W], counts [B], baseline)`` with checks before any forward pass."""
        x = inputs.detach()
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__}: expected images [B, C, H, W], but got shape {tuple(x.shape)}.")
        segments = self.segments(x) if segments is None else _check_segments(segments, x)
        counts = segments.flatten(1).amax(1) + 1
        return x, segments, counts, self._baseline(x, segments)

    def _scores(
        self,
        model: nn.Module,
        x: Tensor,
        baseline: Tensor,
        segments: Tensor,
        owner: Tensor,
        coalitions: Tensor,
        targets: Tensor,
        groups: Sequence[int] | None = None,
    ) -> Tensor:
        """Target logits of rows ``(owner[r], coalitions[r])``: image ``owner[r]`` with the
        superpixels where ``coalitions[r] = 1`` kept and the rest replaced by the baseline;
        ``groups`` are the per-image row counts (chunks never straddle two images)."""

        def rows(sl: slice) -> Tensor:
            return _coalition_rows(x, baseline, segments, owner[sl], coalitions[sl])

        return evaluate_rows(
            model,
            rows,
            targets,
            chunk_size=default_chunk_size(x, self.internal_batch_size),
            adaptive=self.internal_batch_size is None,
            score="logit",
            progress=self.progress,
            desc=type(self).__name__,
            groups=groups,
        )


def _coalition_rows(x: Tensor, baseline: Tensor, segments: Tensor, owner: Tensor, coalitions: Tensor) -> Tensor:
    """Perturbed images: row ``r`` is image ``owner[r]`` with the superpixels where
    ``coalitions[r] = 1`` kept and the others at the baseline. ``z x + (1 - z) b`` with 0/1 ``z``
    is an exact select, done per image (rows are grouped by image) without copying the image."""
    out = x.new_empty(owner.shape[0], *x.shape[1:])
    flat = segments.flatten(1)
    bounds = torch.nonzero(torch.diff(owner, prepend=owner[:1] - 1)).flatten().tolist() + [owner.shape[0]]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        b = int(owner[start])
        keep = coalitions[start:stop].index_select(1, flat[b]).bool().view(stop - start, 1, *x.shape[-2:])
        torch.where(keep, x[b], baseline[b], out=out[start:stop])
    return out


def _stack_rows(per_image: list[Tensor], k_max: int) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten per-image coalition lists ``[N_i, K_i]`` into rows ``[R, k_max]`` (padded with 0),
    their owner ``[R]`` and position within the image ``[R]``."""
    rows, owner, position = [], [], []
    for b, z in enumerate(per_image):
        rows.append(F.pad(z, (0, k_max - z.shape[1])))
        owner.append(torch.full((z.shape[0],), b, dtype=torch.long, device=z.device))
        position.append(torch.arange(z.shape[0], device=z.device))
    return torch.cat(rows), torch.cat(owner), torch.cat(position)


def _to_map(coefficients: Tensor, segments: Tensor) -> Tensor:
    """Paint each superpixel with its coefficient: ``[B, 1, H, W]``."""
    return coefficients.gather(1, segments.flatten(1)).view(segments.shape[0], 1, *segments.shape[1:])


# --------------------------------------------------------------------------------------------
# LIME and Kernel SHAP
# --------------------------------------------------------------------------------------------
class _LinearSurrogate(_SuperpixelExplainer):
    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True
    _n_extra: ClassVar[int] = 0
    """Rows scored after each image's coalitions: Kernel SHAP adds the empty and the full one."""

    def __init__(
        self,
        n_samples: int,
        segmentation: SegmentationType,
        segmentation_kwargs: dict[str, Any] | None,
        baseline: BaselineType,
        seed: int,
        internal_batch_size: int | None,
        progress: bool,
    ) -> None:
        super().__init__(segmentation, segmentation_kwargs, baseline, seed, internal_batch_size, progress)
        self.n_samples = check_int("n_samples", n_samples, 1)

    def sample(self, k: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """``(coalitions [N, k] in {0, 1}, regression weights [N])`` for an image with ``k``
        superpixels, from a generator seeded with ``seed`` (the same for every image)."""
        raise NotImplementedError

    def _weights(self, samples: Tensor) -> Tensor:
        raise NotImplementedError

    def attribute(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType = None,
        *,
        segments: Tensor | None = None,
        samples: Tensor | Sequence[Tensor] | None = None,
        return_coefficients: bool = False,
        output: OutputType = None,
    ) -> Tensor:
        """Explain with injected superpixels and/or coalitions.

        Args:
            model: The model.
            inputs: ``[B, C, H, W]`` images.
            target: Class to explain (``None``: the predicted class).
            segments: ``[B, H, W]`` integer labels (default: this explainer's segmentation).
            samples: Coalitions: a ``[N, K]`` 0/1 tensor for every image, or one per image
                (``K`` = that image's number of superpixels); default: :meth:`sample`.
            return_coefficients: Return the ``[B, K_max]`` surrogate coefficients (zero past an
                image's ``K``) instead of the map.
            output: Where the scores are in the model's output (as in :meth:`__call__`).

        Returns:
            The input-shaped map (each superpixel painted with its coefficient in every channel,
            as captum returns it), or the coefficients.
        """
        result: Tensor = self._run(
            model,
            inputs,
            lambda x, ctx: self._fit(model, x, target, segments, samples, return_coefficients),
            output=output,
        )
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        return self._fit(model, inputs, target, None, None, False)

    def _coalitions(
        self, counts: Tensor, samples: Tensor | Sequence[Tensor] | None, device: torch.device
    ) -> tuple[list[Tensor], list[Tensor]]:
        batch = counts.numel()
        if samples is None:
            drawn = [self.sample(int(k), device) for k in counts.tolist()]
            return [z for z, _ in drawn], [w for _, w in drawn]
        items = list(samples) if not isinstance(samples, Tensor) else [samples] * batch
        if len(items) != batch:
            raise ValueError(f"Expected one coalition tensor per input ({batch}), but got {len(items)}.")
        out = []
        for b, (z, k) in enumerate(zip(items, counts.tolist())):
            z = torch.as_tensor(z, device=device)
            if z.ndim != 2 or z.shape[1] != k or not bool(((z == 0) | (z == 1)).all()):
                raise ValueError(
                    f"Expected input {b}'s coalitions as a [N, {k}] tensor of zeros and ones, but got shape "
                    f"{tuple(z.shape)}."
                )
            out.append(z.long())
        return out, [self._weights(z) for z in out]

    def _fit(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType,
        segments: Tensor | None,
        samples: Tensor | Sequence[Tensor] | None,
        return_coefficients: bool,
    ) -> Tensor:
        x, segments, counts, baseline = self._prepare(inputs, segments)
        batch, k_max = x.shape[0], int(counts.max())
        coalitions, weights = self._coalitions(counts, samples, x.device)
        with torch.no_grad():
            outputs = model(x)
        resolved = resolve_target(target, outputs)
        # each image's rows together: its coalitions, then (Kernel SHAP) the empty and the full
        # coalition, so every image is scored by forward passes of the same shapes whatever the
        # batch (batch invariance to the last bit)
        n_extra = self._n_extra
        per_image = []
        for z, k in zip(coalitions, counts.tolist()):
            extra = [
                torch.zeros(1, k, dtype=z.dtype, device=z.device),
                torch.ones(1, k, dtype=z.dtype, device=z.device),
            ]
            per_image.append(torch.cat([z, *extra[:n_extra]]) if n_extra else z)
        rows, owner, position = _stack_rows(per_image, k_max)
        sizes = [z.shape[0] for z in per_image]
        scores = self._scores(model, x, baseline, segments, owner, rows, resolved[owner], sizes)
        n_max = max(z.shape[0] for z in coalitions)
        main = position < torch.tensor([z.shape[0] for z in coalitions], device=x.device)[owner]
        design = x.new_zeros(batch, n_max, k_max, dtype=torch.float64)
        design[owner[main], position[main]] = rows[main].double()
        y = x.new_zeros(batch, n_max, dtype=torch.float64)
        y[owner[main], position[main]] = scores[main].double()
        w = x.new_zeros(batch, n_max, dtype=torch.float64)
        w[owner[main], position[main]] = torch.cat(weights).double()
        live = torch.arange(k_max, device=x.device)[None, :] < counts[:, None]
        ends = torch.tensor(sizes, device=x.device).cumsum(0)
        empty = scores[ends - 2].double() if n_extra else None
        full = scores[ends - 1].double() if n_extra else target_scores(outputs, resolved, "logit").double()
        coefficients = self._solve(design, y, w, live, full, empty).to(x.dtype)
        if return_coefficients:
            return coefficients
        return _to_map(coefficients, segments).expand(-1, x.shape[1], -1, -1).contiguous()

    def _solve(self, design: Tensor, y: Tensor, w: Tensor, live: Tensor, full: Tensor, empty: Tensor | None) -> Tensor:
        raise NotImplementedError


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


def _solve_spd(matrix: Tensor, rhs: Tensor) -> Tensor:
    """Batched least-norm least-squares solution of ``matrix @ s = rhs`` (pseudo-inverse, float64):
    the unique solution when the coalitions determine the fit, and a deterministic one when there
    are too few of them (where an LU solve would return rounding noise)."""
    return (torch.linalg.pinv(matrix, hermitian=True) @ rhs[..., None]).squeeze(-1)


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


# --------------------------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------------------------
def _kl_bernoulli(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.minimum(np.maximum(p, 1e-12), 1 - 1e-12)
    q = np.minimum(np.maximum(q, 1e-12), 1 - 1e-12)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def kl_bounds(means: Tensor | np.ndarray, level: Tensor | np.ndarray, iterations: int = 26) -> tuple[Tensor, Tensor]:
    """KL confidence bounds of Bernoulli means: the smallest ``lower <= mean`` and the largest
    ``upper >= mean`` with ``KL(mean || bound) <= level`` (bisection, vectorised; float64 NumPy,
    since the arrays are small and the search calls it every round).

    Examples:
        >>> low, up = kl_bounds(torch.tensor([0.5]), torch.tensor([0.1]))
        >>> round(float(low[0]), 3), round(float(up[0]), 3)
        (0.287, 0.713)
    """
    m = np.asarray(means, dtype=np.float64)
    lv = np.broadcast_to(np.asarray(level, dtype=np.float64), m.shape)
    lo, hi = m.copy(), np.ones_like(m)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        inside = _kl_bernoulli(m, mid) <= lv
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    upper = lo
    lo, hi = np.zeros_like(m), m.copy()
    for _ in range(iterations):
        mid = (lo + hi) / 2
        inside = _kl_bernoulli(m, mid) <= lv
        hi = np.where(inside, mid, hi)
        lo = np.where(inside, lo, mid)
    return torch.from_numpy(hi), torch.from_numpy(upper)


@dataclass
class AnchorResult:
    """What :meth:`Anchors.explain` found for each input.

    Attributes:
        mask: ``[B, 1, H, W]`` 1 on the anchor's superpixels.
        anchors: The anchor's superpixel labels per input.
        precision: Estimated precision of each anchor.
        lower_bound: Its KL lower confidence bound at level ``1 - delta``.
        coverage: Share of the perturbation distribution the anchor applies to, ``p^|A|``.
        valid: Whether the lower bound reached the threshold (else the best anchor found).
        n_samples: Perturbed inputs evaluated per input.
        segments: ``[B, H, W]`` the superpixels.
    """

    mask: Tensor
    anchors: list[list[int]]
    precision: Tensor
    lower_bound: Tensor
    coverage: Tensor
    valid: Tensor
    n_samples: Tensor
    segments: Tensor


class Anchors(_SuperpixelExplainer):
    """Anchors for images (Ribeiro, Singh & Guestrin 2018): the smallest set of superpixels that,
    kept fixed while every other superpixel is independently kept with probability ``p_keep``
    (else replaced by the baseline), keeps the model's prediction with precision >=
    ``threshold`` at confidence ``1 - delta``.

    Beam search over anchor size: the candidates of size ``s`` extend the ``beam_size`` best
    anchors of size ``s - 1`` by one superpixel; KL-LUCB (Kaufmann & Kalyanakrishnan 2013)
    samples the candidates adaptively, ``batch_size`` perturbations per pull, until the best
    ``beam_size`` are identified within ``epsilon`` (exploration rate
    ``beta = log(405.5 n t^1.1 / delta) + log log(...)``, the Anchors paper's choice); each
    chosen candidate is then sampled until its KL lower bound clears ``threshold`` or its upper
    bound falls below it (at most ``max_samples`` perturbations). The first size with a candidate
    whose lower bound clears the threshold returns the most precise such candidate (same size
    means same coverage). The "prediction" is the target class (``None``: the predicted one).
    Inputs are explained one after the other (the search is adaptive), each with a generator
    seeded with ``seed``. The search stops when the next pull would exceed ``budget`` perturbed
    inputs for the image; it then returns the anchor with the best lower bound so far, with
    ``valid`` False unless that bound cleared the threshold.

    COST: per image at most ``budget`` perturbed inputs through the model (the exact number is
    :attr:`AnchorResult.n_samples`), in one forward pass per pull (``2 * batch_size`` rows per
    KL-LUCB round, ``batch_size`` per anchor per validation pull, ``n_init`` per new candidate,
    split into chunks of ``internal_batch_size``), plus one forward of the batch for the
    prediction. What the budget cuts: anchor size ``s`` costs ``n_init`` times its new candidates
    (up to ``beam_size * (K - s + 1)`` with ``K`` superpixels), plus the rounds, each candidate at
    most ``max_samples``; a model whose prediction needs many superpixels walks through many
    sizes, ``O(K^2 n_init)`` and more (360,000 perturbed inputs per 1x28x28 image with ``K = 49``
    on a small CNN, two minutes on one CPU thread; about 1.5 s with the default budget). Map: 1
    on the anchor, 0 elsewhere.

    Args:
        threshold: Precision ``tau``.
        delta: Confidence parameter.
        epsilon: KL-LUCB tolerance.
        beam_size: Anchors kept per size.
        max_anchor_size: Largest anchor tried (default: every superpixel).
        p_keep: Probability that a superpixel outside the anchor is kept.
        batch_size: Perturbations per pull.
        n_init: Perturbations per new candidate.
        max_samples: Most perturbations per candidate.
        budget: Most perturbed inputs per image over the whole search (``None``: no bound; the
            search then ends only at ``max_anchor_size``). Must cover the first size's
            ``n_init * K``.
        segmentation: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"`` or a callable.
        segmentation_kwargs: Keyword arguments of the segmentation.
        baseline: Value of removed superpixels: a float, a tensor or ``"mean"``.
        seed: Seed of the private generator.
        internal_batch_size: Perturbed inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar over the inputs.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        >>> anchors = Anchors(segmentation_kwargs={"n_segments": 8}, max_samples=64)
        >>> anchors(model, torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """

    signed: ClassVar[bool] = False

    def __init__(
        self,
        threshold: float = 0.95,
        delta: float = 0.1,
        epsilon: float = 0.1,
        beam_size: int = 1,
        max_anchor_size: int | None = None,
        p_keep: float = 0.5,
        batch_size: int = 32,
        n_init: int = 32,
        max_samples: int = 1024,
        budget: int | None = 10_000,
        segmentation: SegmentationType = "slic",
        segmentation_kwargs: dict[str, Any] | None = None,
        baseline: BaselineType = 0.0,
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(segmentation, segmentation_kwargs, baseline, seed, internal_batch_size, progress)
        self.threshold = check_float("threshold", threshold, 0.0, 1.0)
        self.delta = check_float("delta", delta, 0.0, 1.0)
        if self.delta in (0.0, 1.0):
            raise ValueError(f"Expected argument `delta` in the open (0, 1) range, but got {self.delta}.")
        self.epsilon = check_float("epsilon", epsilon, 0.0, 1.0)
        self.beam_size = check_int("beam_size", beam_size, 1)
        self.max_anchor_size = check_int("max_anchor_size", max_anchor_size, 1, allow_none=True)
        self.p_keep = check_float("p_keep", p_keep, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.n_init = check_int("n_init", n_init, 1)
        self.max_samples = check_int("max_samples", max_samples, 1)
        self.budget = check_int("budget", budget, 1, allow_none=True)
        if self.budget is not None and self.budget < self.n_init:
            raise ValueError(f"Expected argument `budget` >= n_init ({self.n_init}), but got {self.budget}.")

    def explain(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType = None,
        *,
        segments: Tensor | None = None,
        output: OutputType = None,
    ) -> AnchorResult:
        """Find the anchors, with their precision, bounds and costs (see :class:`AnchorResult`);
        ``segments`` injects the superpixels, ``output`` as in :meth:`__call__`."""
        result: tuple[AnchorResult] = self._run(
            model, inputs, lambda x, ctx: (self._search(model, x, target, segments),), output=output
        )
        return result[0]

    def precision(
        self,
        model: nn.Module,
        inputs: Tensor,
        anchors: Sequence[Sequence[int]],
        target: TargetType = None,
        *,
        segments: Tensor | None = None,
        n_samples: int = 1000,
        seed: int = 12345,
        output: OutputType = None,
    ) -> Tensor:
        """Precision of given anchors on ``n_samples`` fresh perturbations per input (a seed
        apart from the search's), ``[B]``."""

        def compute(x: Tensor, ctx: ExplainContext) -> Tensor:
            x, segs, counts, baseline = self._prepare(x, segments)
            with torch.no_grad():
                resolved = resolve_target(target, model(x))
            gen = generator(seed, x.device)
            out = []
            for b in range(x.shape[0]):
                z = self._draw(int(counts[b]), list(anchors[b]), n_samples, gen)
                owner = torch.full((n_samples,), b, device=x.device)
                hits = self._hits(model, x, baseline, segs, owner, z, resolved[b])
                out.append(hits.double().mean())
            return torch.stack(out)

        result: Tensor = self._run(model, inputs, compute, output=output)
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        return self._search(model, inputs, target, None).mask

    def _draw(self, k: int, anchor: Sequence[int], n: int, gen: torch.Generator) -> Tensor:
        z = (torch.rand(n, k, generator=gen, device=gen.device) < self.p_keep).long()
        if anchor:
            z[:, list(anchor)] = 1
        return z

    def _hits(
        self, model: nn.Module, x: Tensor, baseline: Tensor, segments: Tensor, owner: Tensor, z: Tensor, label: Tensor
    ) -> Tensor:
        chunk = default_chunk_size(x, self.internal_batch_size)
        hits = []
        with torch.no_grad():
            for sl in chunks(z.shape[0], chunk):
                rows = _coalition_rows(x, baseline, segments, owner[sl], z[sl])
                hits.append(model(rows).argmax(1) == label)
        return torch.cat(hits)

    def _beta(self, n_candidates: int, t: int) -> float:
        temp = math.log(405.5 * n_candidates * t**1.1 / self.delta)
        return temp + math.log(max(temp, 1.0))

    def _search(self, model: nn.Module, inputs: Tensor, target: TargetType, segments: Tensor | None) -> AnchorResult:
        x, segs, counts, baseline = self._prepare(inputs, segments)
        with torch.no_grad():
            resolved = resolve_target(target, model(x))
        batch = x.shape[0]
        anchors, precisions, lowers, coverages, valids, costs = [], [], [], [], [], []
        with progress_bar(batch, self.progress, "Anchors") as update:
            for b in range(batch):
                anchor, prec, lower, valid, cost = self._search_one(
                    model, x, baseline, segs, b, int(counts[b]), resolved[b]
                )
                anchors.append(sorted(anchor))
                precisions.append(prec)
                lowers.append(lower)
                coverages.append(self.p_keep ** len(anchor))
                valids.append(valid)
                costs.append(cost)
                update(1)
        member = torch.zeros(batch, int(counts.max()), device=x.device, dtype=x.dtype)
        for b, anchor in enumerate(anchors):
            member[b, anchor] = 1
        return AnchorResult(
            mask=_to_map(member, segs),
            anchors=anchors,
            precision=torch.tensor(precisions, dtype=torch.float64),
            lower_bound=torch.tensor(lowers, dtype=torch.float64),
            coverage=torch.tensor(coverages, dtype=torch.float64),
            valid=torch.tensor(valids),
            n_samples=torch.tensor(costs),
            segments=segs,
        )

    def _search_one(
        self, model: nn.Module, x: Tensor, baseline: Tensor, segs: Tensor, b: int, k: int, label: Tensor
    ) -> tuple[frozenset[int], float, float, bool, int]:
        gen = generator(self.seed, x.device)
        stats: dict[frozenset[int], list[int]] = {}  # anchor -> [pulls, hits]
        cost = 0
        budget = self.budget if self.budget is not None else math.inf
        if k * self.n_init > budget:
            raise ValueError(
                f"Anchors: the first anchor size needs n_init * superpixels = {self.n_init} * {k} = "
                f"{k * self.n_init} perturbed inputs, more than budget={self.budget}; raise `budget`, lower "
                "`n_init` or use fewer superpixels (`segmentation_kwargs`)."
            )

        def pull(requests: list[tuple[frozenset[int], int]]) -> bool:
            """Evaluate the requests unless that would exceed the budget (then ``False``)."""
            nonlocal cost
            if cost + sum(n for _, n in requests) > budget:
                return False
            zs = [self._draw(k, sorted(a), n, gen) for a, n in requests]
            z = torch.cat(zs)
            owner = torch.full((z.shape[0],), b, device=x.device)
            hits = self._hits(model, x, baseline, segs, owner, z, label)
            cost += z.shape[0]
            start = 0
            for a, n in requests:
                entry = stats.setdefault(a, [0, 0])
                entry[0] += n
                entry[1] += int(hits[start : start + n].sum())
                start += n
            return True

        def bounds(cands: list[frozenset[int]], t: int) -> tuple[Tensor, Tensor, Tensor]:
            n = np.array([stats[a][0] for a in cands], dtype=np.float64)
            mean = np.array([stats[a][1] for a in cands], dtype=np.float64) / n
            low, up = kl_bounds(mean, self._beta(n_arms, t) / n)
            return torch.from_numpy(mean), low, up

        beam: list[frozenset[int]] = [frozenset()]
        best: tuple[frozenset[int], float, float] | None = None
        n_arms = 1
        max_size = min(k, self.max_anchor_size or k)
        exhausted = False
        for _size in range(1, max_size + 1):
            candidates = sorted({a | {j} for a in beam for j in range(k) if j not in a}, key=sorted)
            if not candidates:
                break
            new = [(a, self.n_init) for a in candidates if a not in stats]
            if new and not pull(new):
                break  # the budget cannot start this size: keep the best of the smaller ones
            n_arms = len(candidates)
            # KL-LUCB: identify the beam_size best candidates within epsilon
            m = min(self.beam_size, len(candidates))
            t = 1
            while True:
                mean, low, up = bounds(candidates, t)
                order = torch.argsort(mean, descending=True, stable=True)
                chosen, rest = order[:m], order[m:]
                if rest.numel() == 0:
                    break
                worst_in = chosen[torch.argmin(low[chosen])]
                best_out = rest[torch.argmax(up[rest])]
                if float(up[best_out] - low[worst_in]) <= self.epsilon:
                    break
                requests = [
                    (candidates[int(i)], self.batch_size)
                    for i in (worst_in, best_out)
                    if stats[candidates[int(i)]][0] < self.max_samples
                ]
                if not requests:
                    break
                if not pull(requests):
                    exhausted = True
                    break
                t += 1
            beam = [candidates[int(i)] for i in chosen]
            # validate the beam: sample until the bound decides (or the budget is spent); the
            # bounds use the exploration rate of the whole candidate set, as in KL-LUCB
            while True:
                mean_b, low_b, up_b = bounds(beam, t)
                undecided = [
                    (a, min(self.batch_size, self.max_samples - stats[a][0]))
                    for i, a in enumerate(beam)
                    if float(low_b[i]) < self.threshold <= float(up_b[i]) and stats[a][0] < self.max_samples
                ]
                if not undecided or not pull(undecided):
                    exhausted = exhausted or bool(undecided)
                    break
            valid = [i for i in range(len(beam)) if float(low_b[i]) >= self.threshold]
            if valid:
                i = max(valid, key=lambda j: (float(mean_b[j]), float(low_b[j])))
                return beam[i], float(mean_b[i]), float(low_b[i]), True, cost
            i = int(torch.argmax(low_b))
            if best is None or float(low_b[i]) > best[2]:
                best = (beam[i], float(mean_b[i]), float(low_b[i]))
            if exhausted:
                break
        if best is None:  # no superpixel at all
            return frozenset(), 1.0, 1.0, False, cost
        return best[0], best[1], best[2], False, cost


# --------------------------------------------------------------------------------------------
# XRAI
# --------------------------------------------------------------------------------------------
class XRAI(Explainer):
    """XRAI (Kapishnikov, Bolukbasi, Viégas & Terry 2019): region attribution by greedy growth.

    1. Pixel attributions: :class:`IntegratedGradients` from a black (``0``) and a white
       (``1``) baseline, averaged (``baselines``), summed over channels.
    2. Over-segmentation: Felzenszwalb at every scale in ``scales`` (``sigma``, ``min_size``),
       each segment dilated by ``dilation`` pixels (a disk), segments from every scale pooled.
    3. Greedy growth: starting from nothing, repeatedly add the segment whose *new* pixels have
       the highest mean attribution (gain density); its new pixels get that gain as their
       value. Segments adding fewer than ``min_pixel_diff`` new pixels are dropped. Growth stops
       when ``area_threshold`` of the image is covered or no segment is left; uncovered pixels
       get the mean attribution of the uncovered area.

    The map (input-shaped, the same in every channel; signed, as gains can be negative) ranks
    regions: thresholding it at any level gives the XRAI region of that area. The
    defaults scale the paper's 299x299 settings (min size 150, dilation 5, min pixel difference
    50) to the image size.

    COST: the IG cost (``n_steps * len(baselines)`` forward + backward passes of the batch) plus
    ``len(scales)`` segmentations per image on the CPU.

    Args:
        n_steps: Integrated-gradients steps.
        baselines: Constant baseline values (default black 0 and white 1).
        scales: Felzenszwalb scales.
        sigma: Felzenszwalb smoothing.
        min_size: Felzenszwalb minimum segment size (default: scaled from 150 at 299x299).
        dilation: Dilation radius in pixels (default: scaled from 5 at 299x299).
        min_pixel_diff: Least number of new pixels a segment must add (default: scaled from 50).
        area_threshold: Stop growing at this covered fraction.
        internal_batch_size: Path points per IG pass (``None``: IG's default bound).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        >>> XRAI(n_steps=4, scales=(50, 100))(model, torch.rand(2, 3, 16, 16), 1).shape
        torch.Size([2, 3, 16, 16])
    """

    registry_name: ClassVar[str | None] = "xrai"
    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True

    def __init__(
        self,
        n_steps: int = 32,
        baselines: Sequence[float] = (0.0, 1.0),
        scales: Sequence[float] = (50, 100, 150, 250, 500, 1200),
        sigma: float = 0.8,
        min_size: int | None = None,
        dilation: int | None = None,
        min_pixel_diff: int | None = None,
        area_threshold: float = 1.0,
        internal_batch_size: int | None = None,
    ) -> None:
        self.n_steps = check_int("n_steps", n_steps, 1)
        if not isinstance(baselines, (list, tuple)) or not baselines:
            raise ValueError(f"Expected argument `baselines` to be a non-empty list of floats, but got {baselines!r}.")
        self.baselines = [check_float("baselines", v) for v in baselines]
        if not isinstance(scales, (list, tuple)) or not scales:
            raise ValueError(f"Expected argument `scales` to be a non-empty list of floats, but got {scales!r}.")
        self.scales = [check_float("scales", s, 0.0) for s in scales]
        self.sigma = check_float("sigma", sigma, 0.0)
        self.min_size = check_int("min_size", min_size, 1, allow_none=True)
        self.dilation = check_int("dilation", dilation, 0, allow_none=True)
        self.min_pixel_diff = check_int("min_pixel_diff", min_pixel_diff, 1, allow_none=True)
        self.area_threshold = check_float("area_threshold", area_threshold, 0.0, 1.0)
        self.internal_batch_size = check_int("internal_batch_size", internal_batch_size, 1, allow_none=True)

    def _scaled(self, value: int | None, paper: float, pixels: int, power: float) -> int:
        if value is not None:
            return value
        return max(1, round(paper * (pixels / 299**2) ** power))

    def segments(self, inputs: Tensor) -> list[Tensor]:
        """The pooled multi-scale segments of each image: a list of ``[S_i, H, W]`` bool masks."""
        x = inputs.detach()
        height, width = x.shape[-2:]
        pixels = height * width
        min_size = self._scaled(self.min_size, 150, pixels, 1.0)
        radius = self._scaled(self.dilation, 5, pixels, 0.5)
        labels = [superpixels(x, "felzenszwalb", scale=s, sigma=self.sigma, min_size=min_size) for s in self.scales]
        offs = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        disk = ((offs[:, None] ** 2 + offs[None, :] ** 2) <= radius**2 + 1e-9).to(x.dtype)[None, None]
        out = []
        for b in range(x.shape[0]):
            masks = torch.cat([F.one_hot(lab[b], int(lab[b].max()) + 1).permute(2, 0, 1) for lab in labels]).to(x.dtype)
            if radius > 0:
                masks = F.conv2d(masks[:, None], disk, padding=radius)[:, 0] > 0.5
            out.append(masks.bool())
        return out

    def attribute(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType = None,
        *,
        segments: Sequence[Tensor] | None = None,
        attributions: Tensor | None = None,
        output: OutputType = None,
    ) -> Tensor:
        """XRAI with injected segments (a list of ``[S_i, H, W]`` bool masks per image) and/or
        injected pixel attributions (``[B, H, W]`` or input-shaped, summed over channels);
        ``output`` as in :meth:`__call__`."""
        result: Tensor = self._run(
            model, inputs, lambda x, ctx: self._xrai(model, x, target, ctx, segments, attributions), output=output
        )
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        return self._xrai(model, inputs, target, ctx, None, None)

    def _xrai(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType,
        ctx: ExplainContext,
        segments: Sequence[Tensor] | None,
        attributions: Tensor | None,
    ) -> Tensor:
        x = inputs.detach()
        if x.ndim != 4:
            raise ValueError(f"XRAI: expected images [B, C, H, W], but got shape {tuple(x.shape)}.")
        batch, _, height, width = x.shape
        if segments is None:
            segments = self.segments(x)
        elif len(segments) != batch or any(s.ndim != 3 or s.shape[1:] != (height, width) for s in segments):
            raise ValueError(f"Expected `segments` as {batch} tensors of shape [S, {height}, {width}].")
        if attributions is None:
            ig = IntegratedGradients(
                n_steps=self.n_steps,
                baseline=[torch.full((1,), v, dtype=x.dtype) for v in self.baselines],
                internal_batch_size=self.internal_batch_size,
            )
            attributions = ig._attribute(model, ctx.prepare(x), target, ctx).detach()
        attr = attributions.to(x.device, x.dtype)
        if attr.ndim == 4:
            attr = attr.sum(1)
        if attr.shape != (batch, height, width):
            raise ValueError(f"Expected `attributions` of shape {(batch, height, width)}, got {tuple(attr.shape)}.")
        min_diff = self._scaled(self.min_pixel_diff, 50, height * width, 1.0)
        grown = torch.stack([self._grow(attr[b], segments[b].to(x.device).bool(), min_diff) for b in range(batch)])
        return grown[:, None].expand(-1, x.shape[1], -1, -1).contiguous()

    def _grow(self, attr: Tensor, masks: Tensor, min_diff: int) -> Tensor:
        """Greedy region growth for one image: ``[H, W]`` map of gain densities."""
        flat_attr = attr.flatten()
        pixels = flat_attr.numel()
        masks = masks.flatten(1)
        out = torch.full_like(flat_attr, float("nan"))
        covered = torch.zeros(pixels, dtype=torch.bool, device=attr.device)
        alive = torch.ones(masks.shape[0], dtype=torch.bool, device=attr.device)
        while bool(alive.any()) and float(covered.float().mean()) < self.area_threshold:
            added = masks & ~covered
            counts = added.sum(1)
            alive &= counts >= min_diff
            if not bool(alive.any()):
                break
            gains = (added.to(attr.dtype) @ flat_attr) / counts.clamp(min=1)
            gains = torch.where(alive, gains, torch.full_like(gains, -float("inf")))
            best = int(torch.argmax(gains))
            new = added[best]
            out[new] = gains[best]
            covered |= new
            alive[best] = False
        rest = ~covered
        if bool(rest.any()):
            out[rest] = flat_attr[rest].mean()
        return out.view_as(attr)
