"""Occlusion (Zeiler & Fergus 2013): the score drop when a sliding window is replaced by a baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType
from lightning_xai.attribution.perturbation.base import _check_bool, _resolve
from lightning_xai.attribution.sampling import check_chunk_size, default_chunk_size, evaluate_rows

__all__ = [
    "Occlusion",
]


IntOrTuple = Union[int, Sequence[int]]


def _int_tuple(name: str, value: Any, low: int) -> tuple[int, ...]:
    items = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, (tuple, list)) or not items:
        raise TypeError(f"Expected argument `{name}` to be an int or a tuple of ints, but got {value!r}.")
    return tuple(check_int(name, v, low) for v in items)


# Occlusion
class Occlusion(Explainer):
    """Occlusion (Zeiler & Fergus 2013), exactly as captum ``Occlusion``.

    A window slides over the input with ``stride``; at each position the window is replaced by
    ``baseline`` (``x * (1 - m) + baseline * m``) and the drop of the target output
    ``S_c(x) - S_c(x_occluded)`` is credited to every element of the window. Each element's
    attribution is the mean drop over the windows that cover it. Window starts are
    ``0, s, 2s, ...`` up to ``ceil((n - w) / s)`` steps, the last window clipped at the edge (captum's
    positions), so every element is covered.

    ``window`` and ``stride`` are an int (every spatial axis), a tuple over the spatial axes
    (every channel occluded together), or a tuple over the channel and spatial axes (captum's
    ``sliding_window_shapes``). The occlusion masks are separable, so the credit assignment is a
    contraction of the ``[B, positions]`` drops with one ``[positions, n]`` cover matrix per axis:
    no Python loop over windows.

    COST: ``1 + P`` forward passes per input (``P`` window positions; the first scores the
    input itself), in chunks of at most ``internal_batch_size`` rows that never mix two inputs
    (so a batch gives bitwise the maps of its inputs one by one); no backward pass.

    Args:
        window: Window shape.
        stride: Step between windows (default: the window, no overlap); at most the window
            where the window does not span the axis, as captum requires.
        baseline: The occluding value: a float or a tensor broadcastable to the inputs.
        internal_batch_size: Occluded inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar.

    Raises:
        TypeError / ValueError: bad ``window``, ``stride`` (0 or negative), ``baseline`` or
            ``internal_batch_size``; when called, a window larger than the input or a stride larger than
            its window (before any forward pass).

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        >>> Occlusion(window=(4, 4), stride=(2, 2))(model, torch.rand(2, 3, 8, 8), 1).shape
        torch.Size([2, 3, 8, 8])
    """

    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True

    def __init__(
        self,
        window: IntOrTuple = (8, 8),
        stride: IntOrTuple | None = None,
        baseline: float | Tensor = 0.0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        self.window = _int_tuple("window", window, 1)
        self.stride = self.window if stride is None else _int_tuple("stride", stride, 1)
        if len(self.stride) != len(self.window) and len(self.stride) != 1 and len(self.window) != 1:
            raise ValueError(
                f"Expected `window` and `stride` of the same length, but got {self.window} and {self.stride}."
            )
        if isinstance(baseline, Tensor):
            if not baseline.is_floating_point():
                raise TypeError(f"Expected a floating-point baseline tensor, but got dtype {baseline.dtype}.")
            self.baseline: float | Tensor = baseline.detach()
        else:
            self.baseline = check_float("baseline", baseline)
        self.internal_batch_size = check_chunk_size(internal_batch_size)
        self.progress = _check_bool("progress", progress)

    def _shapes(self, dims: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Window and stride over every non-batch axis (channel axis included)."""

        def full(spec: tuple[int, ...], name: str) -> tuple[int, ...]:
            if len(spec) == 1:
                spec = spec * (len(dims) - 1)
            if len(spec) == len(dims) - 1:
                return (dims[0], *spec) if name == "window" else (1, *spec)
            if len(spec) == len(dims):
                return spec
            raise ValueError(
                f"Occlusion: `{name}` {spec} does not fit inputs with non-batch shape {dims}: give one value per "
                f"spatial axis ({len(dims) - 1}) or per channel and spatial axis ({len(dims)})."
            )

        window, stride = full(self.window, "window"), full(self.stride, "stride")
        for axis, (n, w, s) in enumerate(zip(dims, window, stride)):
            if w > n:
                raise ValueError(f"Occlusion: window {window} is larger than the input {dims} along axis {axis + 1}.")
            if w < n and s > w:
                raise ValueError(
                    f"Occlusion: stride {stride} is larger than the window {window} along axis {axis + 1}: some "
                    "elements would never be occluded."
                )
        return window, stride

    def cover_matrices(self, dims: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> list[Tensor]:
        """Per non-batch axis, the ``[positions, n]`` 0/1 matrix of which elements each window
        position covers (captum's positions)."""
        window, stride = self._shapes(dims)
        mats = []
        for n, w, s in zip(dims, window, stride):
            count = math.ceil((n - w) / s) + 1
            starts = torch.arange(count, device=device) * s
            idx = torch.arange(n, device=device)
            mats.append(((idx >= starts[:, None]) & (idx < starts[:, None] + w)).to(dtype))
        return mats

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        dims = tuple(x.shape[1:])
        mats = self.cover_matrices(dims, x.device, x.dtype)  # validates before any forward pass
        try:
            baseline = torch.broadcast_to(torch.as_tensor(self.baseline, dtype=x.dtype, device=x.device), x.shape)
        except RuntimeError:
            raise ValueError(
                f"Occlusion: the baseline of shape {tuple(torch.as_tensor(self.baseline).shape)} does not broadcast "
                f"to the inputs' shape {tuple(x.shape)}."
            ) from None
        _, resolved = _resolve(model, x, target)
        batch = x.shape[0]
        counts = [m.shape[0] for m in mats]
        n_pos = math.prod(counts)
        per_image = n_pos + 1  # row 0 of each image: the image itself (its clean score)
        strides = [math.prod(counts[d + 1 :]) for d in range(len(counts))]
        ones = [1] * len(dims)
        scalar = None if isinstance(self.baseline, Tensor) else float(self.baseline)

        def rows(sl: slice) -> Tensor:
            # x * (1 - m) + baseline * m for a 0/1 mask m is an exact select: fill the window instead
            r = torch.arange(sl.start, sl.stop, device=x.device)
            b, p = r // per_image, r % per_image - 1
            mask = (p >= 0).view(-1, *ones)
            p = p.clamp(min=0)
            for d, m in enumerate(mats):
                shape = [-1] + [1] * len(dims)
                shape[d + 1] = dims[d]
                mask = mask & m[(p // strides[d]) % counts[d]].bool().view(shape)
            out = x[b]
            if scalar is not None:
                return out.masked_fill_(mask, scalar)
            return torch.where(mask, baseline[b], out)

        # chunks never straddle two images: each image's forward passes have the same shapes
        # whatever the batch, so a batch gives bitwise the maps of its images one by one
        scores = evaluate_rows(
            model,
            rows,
            resolved.repeat_interleave(per_image),
            chunk_size=default_chunk_size(x, self.internal_batch_size),
            adaptive=self.internal_batch_size is None,
            score="logit",
            progress=self.progress,
            desc="Occlusion",
            groups=[per_image] * batch,
        ).view(batch, per_image)
        drops = (scores[:, :1] - scores[:, 1:]).reshape(batch, *counts)
        total = drops
        for m in mats:  # contract the leading position axis, append the element axis
            total = torch.tensordot(total, m, dims=([1], [0]))
        weight = mats[0].sum(0).view(-1, *ones[1:])
        for d, m in enumerate(mats[1:], start=1):
            shape = [1] * len(dims)
            shape[d] = dims[d]
            weight = weight * m.sum(0).view(shape)
        return total / weight.unsqueeze(0)
