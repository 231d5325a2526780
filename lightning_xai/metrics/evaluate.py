"""Per-sample explanation-quality scores by name: the one library call a monitor makes per metric.

:func:`per_sample_scores` dispatches a metric name (``"deletion_auc"``, ``"pointing_game"``, ...)
to its function in :mod:`lightning_xai.metrics.functional` and returns one value per input, so a
callback can shard the work over DDP ranks and gather rows. No Lightning import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_xai.attribution.base import TargetType
from lightning_xai.metrics.functional import faithfulness as _faith
from lightning_xai.metrics.functional import localisation as _loc
from lightning_xai.metrics.functional import randomisation as _rand
from lightning_xai.metrics.functional import robustness as _rob
from lightning_xai.metrics.functional._common import ExplainFn
from lightning_xai.metrics.functional.faithfulness import curve_auc

__all__ = ["MetricSpec", "METRICS", "per_sample_scores", "check_metric_name"]


@dataclass(frozen=True)
class MetricSpec:
    """How to compute one named metric per sample."""

    fn: Callable[..., Tensor]
    needs_masks: bool = False
    higher_is_better: bool = True
    defaults: tuple[tuple[str, Any], ...] = ()


def _deletion(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _faith.deletion_auc(model, x, maps, target, **kw)


def _insertion(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _faith.insertion_auc(model, x, maps, target, **kw)


def _pixel_flipping(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return curve_auc(_faith.pixel_flipping(model, x, maps, target, **kw))


def _region(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _faith.region_perturbation(model, x, maps, target, **kw).mean(dim=1)


def _faithfulness_correlation(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _faith.faithfulness_correlation(model, x, maps, target, **kw)


def _infidelity(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _faith.infidelity(model, x, maps, target, **kw)


def _lipschitz(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _rob.local_lipschitz(model, x, explainer, target, attributions=maps, **kw)


def _sensitivity(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _rob.max_sensitivity(model, x, explainer, target, attributions=maps, **kw)


def _fragility(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _rob.fragility(model, x, explainer, target, **kw).topk_intersection


def _pointing(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _loc.pointing_game(maps, masks)


def _aupr(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _loc.mask_aupr(maps, masks)


def _mass(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _loc.mask_mass(maps, masks)


def _invariance(model, x, maps, target, masks, explainer, **kw):  # noqa: ANN001, ANN202
    return _rand.input_invariance(model, x, explainer, target, attributions=maps, **kw)


METRICS: dict[str, MetricSpec] = {
    "deletion_auc": MetricSpec(_deletion, higher_is_better=False),
    "insertion_auc": MetricSpec(_insertion),
    "pixel_flipping": MetricSpec(_pixel_flipping, higher_is_better=False, defaults=(("features_in_step", 16),)),
    "region_perturbation": MetricSpec(_region, defaults=(("patch_size", 4), ("regions", 16))),
    "faithfulness_correlation": MetricSpec(_faithfulness_correlation, defaults=(("runs", 32), ("subset_size", 16))),
    "infidelity": MetricSpec(_infidelity, higher_is_better=False),
    "local_lipschitz": MetricSpec(_lipschitz, higher_is_better=False, defaults=(("samples", 4),)),
    "max_sensitivity": MetricSpec(_sensitivity, higher_is_better=False, defaults=(("samples", 4),)),
    "fragility": MetricSpec(_fragility, defaults=(("iterations", 4),)),
    "pointing_game": MetricSpec(_pointing, needs_masks=True),
    "mask_aupr": MetricSpec(_aupr, needs_masks=True),
    "mask_mass": MetricSpec(_mass, needs_masks=True),
    "input_invariance": MetricSpec(_invariance),
}
"""Every metric :func:`per_sample_scores` knows, by name. Defaults are sized for monitoring a
small probe set during training; pass keyword arguments to change them."""


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
