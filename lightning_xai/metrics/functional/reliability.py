"""Metric reliability (Tomsett et al. 2020): do the scores agree with themselves?

* :func:`krippendorff_alpha`: Krippendorff's alpha of a ``[raters, units]`` table (NaN = missing),
  at the nominal, ordinal, interval or ratio level; vectorised through the coincidence matrix.
* :func:`metric_reliability`: inter-rater reliability of one metric over explainers: each sample
  is a rater that ranks the explainers by the metric (ordinal alpha). Near 1: the metric ranks
  the methods the same way on every input; near 0: the ranking is noise.
* :func:`internal_consistency`: Cronbach's alpha of several metrics over the same units (do the
  metrics measure one property?).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["krippendorff_alpha", "metric_reliability", "internal_consistency"]

_LEVELS = ("nominal", "ordinal", "interval", "ratio")


def krippendorff_alpha(ratings: Tensor, level: str = "interval") -> Tensor:
    """Krippendorff's alpha of ``ratings`` ``[raters, units]`` (NaN marks a missing rating).

    Units with fewer than two ratings are ignored, as in Krippendorff (2011).

    Args:
        ratings: ``[raters, units]`` values.
        level: ``"nominal"``, ``"ordinal"``, ``"interval"`` or ``"ratio"``.

    Returns:
        Scalar alpha (1: perfect agreement, 0: chance; NaN without variation).

    Raises:
        ValueError: ``ratings`` is not 2-D or ``level`` is unknown.

    Examples:
        >>> krippendorff_alpha(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]))
        tensor(1., dtype=torch.float64)
    """
    if level not in _LEVELS:
        raise ValueError(f"Expected argument `level` in {_LEVELS}, but got {level!r}.")
    if not isinstance(ratings, Tensor) or ratings.ndim != 2:
        shape = tuple(ratings.shape) if isinstance(ratings, Tensor) else type(ratings).__name__
        raise ValueError(f"Expected `ratings` of shape [raters, units], but got {shape}.")
    r = ratings.detach().to(torch.float64)
    present = ~torch.isnan(r)
    values = torch.unique(r[present])
    if values.numel() < 2:
        return torch.tensor(float("nan"), dtype=torch.float64)
    # counts[u, c]: how many raters gave unit u the value c
    idx = torch.bucketize(torch.nan_to_num(r), values)
    onehot = torch.zeros(*r.shape, values.numel(), dtype=torch.float64, device=r.device)
    onehot.scatter_(2, idx.unsqueeze(2).clamp_max(values.numel() - 1), present.unsqueeze(2).to(torch.float64))
    counts = onehot.sum(dim=0)  # [U, V]
    m = counts.sum(dim=1)
    keep = m >= 2
    counts, m = counts[keep], m[keep]
    pairs = counts.unsqueeze(2) * counts.unsqueeze(1) - torch.diag_embed(counts)
    coincidence = (pairs / (m - 1).view(-1, 1, 1)).sum(dim=0)  # [V, V]
    n_c = coincidence.sum(dim=1)
    n = n_c.sum()
    c, k = values.view(-1, 1), values.view(1, -1)
    if level == "nominal":
        delta = (c != k).to(torch.float64)
    elif level == "interval":
        delta = (c - k) ** 2
    elif level == "ratio":
        delta = ((c - k) / (c + k).masked_fill((c + k) == 0, 1.0)) ** 2
    else:
        cum = torch.cumsum(n_c, dim=0)
        pos = torch.arange(len(n_c), device=r.device)
        lo = torch.minimum(pos.view(-1, 1), pos.view(1, -1))
        hi = torch.maximum(pos.view(-1, 1), pos.view(1, -1))
        between = cum[hi] - torch.cat([torch.zeros(1, dtype=cum.dtype, device=r.device), cum])[lo]
        delta = (between - (n_c.view(-1, 1) + n_c.view(1, -1)) / 2) ** 2
    observed = (coincidence * delta).sum()
    expected = (n_c.view(-1, 1) * n_c.view(1, -1) * delta).sum() / (n - 1)
    return 1 - observed / expected


def metric_reliability(scores: Tensor) -> Tensor:
    """Inter-rater reliability of a metric across explainers (Tomsett et al. 2020).

    Each sample ranks the explainers by its score (ties share the average rank); the ordinal
    Krippendorff alpha of those rankings, samples as raters and explainers as units, says how
    consistently the metric orders the methods.

    Args:
        scores: ``[samples, explainers]`` metric values (NaN: missing).

    Returns:
        Scalar alpha.

    Examples:
        >>> scores = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.4, 0.8], [0.0, 0.6, 0.7]])
        >>> metric_reliability(scores)
        tensor(1., dtype=torch.float64)
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2:
        raise ValueError("Expected `scores` of shape [samples, explainers].")
    s = scores.detach().to(torch.float64)
    # average ranks per row: 1 + (#smaller) + (#equal - 1) / 2
    smaller = (s.unsqueeze(2) < s.unsqueeze(1)).sum(dim=1).to(torch.float64)
    equal = (s.unsqueeze(2) == s.unsqueeze(1)).sum(dim=1).to(torch.float64)
    ranks = 1 + smaller + (equal - 1) / 2
    ranks = ranks.masked_fill(torch.isnan(s), float("nan"))
    return krippendorff_alpha(ranks, level="ordinal")


def internal_consistency(scores: Tensor) -> Tensor:
    """Cronbach's alpha of ``[metrics, units]`` scores: ``k/(k-1) (1 - sum var_i / var_total)``.

    Standardise metrics of different scales (and flip lower-is-better ones) first.

    Examples:
        >>> internal_consistency(torch.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0]]))
        tensor(0.8889, dtype=torch.float64)
    """
    if not isinstance(scores, Tensor) or scores.ndim != 2 or scores.shape[0] < 2:
        raise ValueError("Expected `scores` of shape [metrics >= 2, units].")
    s = scores.detach().to(torch.float64)
    k = s.shape[0]
    item_var = s.var(dim=1, unbiased=True).sum()
    total_var = s.sum(dim=0).var(unbiased=True)
    return k / (k - 1) * (1 - item_var / total_var)
