"""Shared pieces of the surrogate explainers: superpixel baselines, coalition rows, chunked
scoring, and the weighted linear surrogate that LIME and Kernel SHAP fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, OutputType, TargetType, resolve_target
from lightning_xai.attribution.sampling import check_chunk_size, default_chunk_size, evaluate_rows, target_scores
from lightning_xai.attribution.surrogate.segmentation import (
    SegmentationType,
    _check_segmentation,
    _check_segments,
    _relabel,
    superpixels,
)

__all__ = []


BaselineType = Union[float, Tensor, str]


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


# LIME and Kernel SHAP
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


def _solve_spd(matrix: Tensor, rhs: Tensor) -> Tensor:
    """Batched least-norm least-squares solution of ``matrix @ s = rhs`` (pseudo-inverse, float64):
    the unique solution when the coalitions determine the fit, and a deterministic one when there
    are too few of them (where an LU solve would return rounding noise)."""
    return (torch.linalg.pinv(matrix, hermitian=True) @ rhs[..., None]).squeeze(-1)
