"""Tolerances for comparing two computations of one quantity that are batched, sharded, chunked or
reduced in a different order (ours vs an oracle, DDP vs one process, chunk vs whole batch).

Floating-point addition is not associative: a sum of ``n`` terms computed in two orders differs by
up to about ``n * eps`` relative to the sum of the magnitudes in the worst case and ``sqrt(n) * eps``
typically (random rounding errors), and which order a kernel uses depends on the CPU's vector width
(``ATEN_CPU_CAPABILITY``), the thread count and the batch size. Exact equality is right only for the
same computation run twice.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["reduction_tol", "assert_close_reordered", "assert_same_top_k"]


def reduction_tol(dtype: torch.dtype, n_terms: int, k: float = 16.0) -> float:
    """A relative tolerance for two reduction orders of an ``n_terms``-term computation:
    ``k * eps(dtype) * sqrt(n_terms)``. ``k`` absorbs the steps around the sum (a few ops each
    rounding once) and cancellation modest enough for a test input.

    Example:
        >>> reduction_tol(torch.float32, 100) == 16 * torch.finfo(torch.float32).eps * 10
        True
    """
    if n_terms < 1:
        raise ValueError(f"Expected argument `n_terms` to be >= 1, but got {n_terms}.")
    return k * torch.finfo(dtype).eps * math.sqrt(n_terms)


def assert_close_reordered(actual: Tensor, expected: Tensor, n_terms: int, k: float = 16.0, **kwargs: Any) -> None:
    """``assert_close`` with ``rtol = reduction_tol(dtype, n_terms, k)`` and an absolute floor of
    ``rtol`` times the largest ``|expected|`` (values near zero come from cancellation, so their error
    is relative to the terms' scale, not to themselves)."""
    dtype = expected.dtype if expected.is_floating_point() else torch.float32
    rtol = reduction_tol(dtype, n_terms, k)
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * max(scale, torch.finfo(dtype).tiny), **kwargs)


def assert_same_top_k(chosen: Tensor, scores: Tensor, k: int, largest: bool = True, rtol: float = 0.0) -> None:
    """``chosen [B, k]`` are a valid top-``k`` of ``scores [B, N]`` with ties treated as ties: the
    scores at the chosen indices equal the sorted top-``k`` scores (within ``rtol`` of the score
    scale), and no index is chosen twice. Two computations of near-equal scores may order a tie
    either way; both answers are right."""
    assert chosen.shape == (scores.shape[0], k), (tuple(chosen.shape), k)
    for row in chosen:
        assert len(set(row.tolist())) == k, f"an index chosen twice: {row.tolist()}"
    picked = scores.gather(1, chosen.long())
    best = scores.topk(k, dim=1, largest=largest).values
    order = torch.sort(picked, dim=1, descending=largest).values
    scale = float(scores.abs().max()) if scores.numel() else 0.0
    torch.testing.assert_close(order, best, rtol=rtol, atol=rtol * scale)
