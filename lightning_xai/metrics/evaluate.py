"""Per-sample explanation-quality scores by name: the one library call a monitor makes per metric.

:func:`per_sample_scores` dispatches a metric name (``"deletion_auc"``, ``"pointing_game"``, ...)
to its Metric class's ``per_sample`` function (over :mod:`lightning_xai.metrics.functional`) and
returns one value per input, so a callback can shard the work over DDP ranks and gather rows. No
Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.functional._common import ExplainFn
from lightning_xai.metrics.registry import METRIC_CLASSES

__all__ = ["MetricSpec", "METRICS", "per_sample_scores", "check_metric_name"]


@dataclass(frozen=True)
class MetricSpec:
    """How to compute one named metric per sample."""

    fn: Callable[..., Tensor]
    needs_masks: bool = False
    higher_is_better: bool = True
    defaults: tuple[tuple[str, Any], ...] = ()


METRICS: dict[str, MetricSpec] = {
    name: MetricSpec(cls.per_sample, cls.needs_masks, bool(cls.higher_is_better), cls.monitor_defaults)
    for name, cls in METRIC_CLASSES.items()
    if cls.per_sample is not None
}
"""Every metric :func:`per_sample_scores` knows, by name: derived from the Metric classes of
:data:`~lightning_xai.metrics.registry.METRIC_CLASSES` that have a ``per_sample`` function (their
``needs_masks``, ``higher_is_better`` and ``monitor_defaults``). Defaults are sized for monitoring
a small probe set during training; pass keyword arguments to change them."""


def check_metric_name(name: object) -> str:
    """``name`` if it is a key of :data:`METRICS`."""
    if not isinstance(name, str) or name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}. Known metrics: {', '.join(sorted(METRICS))}.")
    return name


def per_sample_scores(
    name: str,
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    target: TargetType = None,
    *,
    masks: Tensor | None = None,
    explainer: ExplainFn | None = None,
    **kwargs: Any,
) -> Tensor:
    """One value per input of the metric ``name`` for ``maps`` of ``inputs``.

    Args:
        name: A key of :data:`METRICS`.
        model: The model the maps explain.
        inputs: ``[B, C, H, W]`` inputs.
        maps: ``[B, 1 or C, H, W]`` maps of ``explainer`` for ``inputs``.
        target: The explained class per input (``None``: the prediction).
        masks: Ground-truth masks (localisation metrics).
        explainer: The explainer that made ``maps`` (robustness metrics call it again).
        **kwargs: Overrides of the metric function's keyword arguments.

    Returns:
        ``[B]`` values (NaN where undefined for a sample).

    Raises:
        ValueError: Unknown name, or a mask metric without masks.

    Examples:
        >>> import torch
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> per_sample_scores("deletion_auc", model, x, torch.rand(2, 1, 4, 4), steps=4).shape
        torch.Size([2])
    """
    spec = METRICS[check_metric_name(name)]
    if spec.needs_masks and masks is None:
        raise ValueError(f"Metric {name!r} needs ground-truth masks, but got None.")
    options = {**dict(spec.defaults), **kwargs}
    return spec.fn(model, inputs, maps, target, masks, explainer, **options)
