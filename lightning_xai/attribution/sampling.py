"""Shared machinery of the perturbation and surrogate explainers: chunked scoring of perturbed
inputs, score kinds, progress bars, private generators and argument checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import run_chunked, select_scores

__all__ = [
    "SCORE_KINDS",
    "check_chunk_size",
    "check_score",
    "default_chunk_size",
    "evaluate_rows",
    "generator",
    "progress_bar",
    "target_scores",
]

SCORE_KINDS = ("logit", "softmax", "log_softmax")
"""What a perturbation method reads from the model's ``[B, C]`` outputs: the raw target output
(``"logit"``, captum's convention), the target's softmax probability, or its log-probability."""

_CPU_CHUNK_ELEMENTS = 2**18
_CPU_MIN_ROWS = 16
_CUDA_CHUNK_ELEMENTS = 2**24


def check_score(score: Any) -> str:
    """``score`` if it is one of :data:`SCORE_KINDS`, else a ``ValueError``."""
    if score not in SCORE_KINDS:
        raise ValueError(f"Expected argument `score` to be one of {list(SCORE_KINDS)}, but got {score!r}.")
    return str(score)


def check_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size`` (an explainer's ``internal_batch_size``) if it is ``None`` or a positive int."""
    return check_int("internal_batch_size", chunk_size, 1, allow_none=True)


def default_chunk_size(sample: Tensor, chunk_size: int | None = None) -> int:
    """Perturbed inputs per forward pass: ``chunk_size`` if given, else a device-aware bound: on
    CUDA ``2**24`` input elements (64 MiB of float32; a GPU wants wide batches), elsewhere
    ``2**18`` (1 MiB; on a CPU the activations of smaller batches stay in cache), but at least
    16 rows.

    Examples:
        >>> default_chunk_size(torch.zeros(1, 1, 28, 28))
        334
    """
    if chunk_size is not None:
        return chunk_size
    per_row = max(1, sample[0].numel())
    if sample.is_cuda:
        return max(1, _CUDA_CHUNK_ELEMENTS // per_row)
    return max(_CPU_MIN_ROWS, _CPU_CHUNK_ELEMENTS // per_row)


def target_scores(outputs: Tensor, target: Tensor, score: str) -> Tensor:
    """The ``[N]`` scores of ``target`` in ``outputs`` ``[N, C]`` of the kind ``score``."""
    if outputs.ndim != 2:
        raise ValueError(f"Expected the model to return [batch, classes] scores, but got shape {tuple(outputs.shape)}.")
    if score == "softmax":
        outputs = outputs.softmax(dim=1)
    elif score == "log_softmax":
        outputs = outputs.log_softmax(dim=1)
    return select_scores(outputs, target)


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A private generator on ``device`` seeded with ``seed`` (the global RNG stays untouched)."""
    return torch.Generator(device=device).manual_seed(seed)


@contextlib.contextmanager
def progress_bar(total: int, enabled: bool, desc: str) -> Iterator[Callable[[int], None]]:
    """Yield an ``update(n)`` callable: a tqdm bar when ``enabled`` and tqdm is installed, else a
    no-op."""
    if not enabled:
        yield lambda n: None
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with most environments
        yield lambda n: None
        return
    bar = tqdm(total=total, desc=desc, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def evaluate_rows(
    model: nn.Module,
    make_rows: Callable[[slice], Tensor],
    targets: Tensor,
    *,
    chunk_size: int,
    score: str,
    progress: bool = False,
    desc: str = "perturbations",
    adaptive: bool = False,
    groups: Sequence[int] | None = None,
) -> Tensor:
    """Scores of ``len(targets)`` perturbed inputs, built and evaluated chunk by chunk.

    Args:
        model: The model (already inside ``observe``).
        make_rows: ``rows(slice) -> [n, ...]`` perturbed inputs for those row indices.
        targets: ``[N]`` class index of each row.
        chunk_size: Most rows per forward pass.
        score: One of :data:`SCORE_KINDS`.
        progress: Show a progress bar.
        desc: The bar's label.
        adaptive: On out-of-memory, retry a chunk at half its size (``chunk_size`` was a
            default) instead of raising.
        groups: Sizes of consecutive row groups (one per input) that chunks never straddle:
            each input is then scored by forward passes whose shapes do not depend on the other
            inputs of the batch, so a batch gives bitwise the scores of its inputs one by one.

    Returns:
        ``[N]`` scores, under ``torch.no_grad``.
    """
    total = targets.numel()
    holder: list[Tensor] = []

    def body(rows: slice) -> None:
        scores = target_scores(model(make_rows(rows)), targets[rows], score)
        if not holder:
            holder.append(scores.new_empty(total))
        holder[0][rows] = scores
        update(rows.stop - rows.start)

    with torch.no_grad(), progress_bar(total, progress, desc) as update:
        if groups is None:
            run_chunked(total, chunk_size, body, method=desc, adaptive=adaptive)
        else:
            start = 0
            for size in groups:
                offset = start
                run_chunked(
                    size,
                    chunk_size,
                    lambda rows, offset=offset: body(slice(offset + rows.start, offset + rows.stop)),
                    method=desc,
                    adaptive=adaptive,
                )
                start += size
    return holder[0]
