"""Layer-wise relevance propagation and Deep Taylor decomposition as explainers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch  # noqa: F401  (used by the docstring examples)
from torch import Tensor, nn

from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType
from lightning_xai.attribution.propagation.composites import (
    CompositeSpec,
    deep_taylor,
    make_composite,
)
from lightning_xai.attribution.propagation.engine import plan, propagate

__all__ = ["DeepTaylor", "LRP"]


class LRP(Explainer):
    """Layer-wise relevance propagation (Bach et al. 2015; Montavon et al. 2019) with a composite.

    The relevance of the output is the target score ``S_c``; each layer redistributes the
    relevance of its output onto its input by the rule the composite gives it, and the map is the
    relevance of the input pixels. Composites (see
    :mod:`~lightning_xai.attribution.propagation.composites`): ``"epsilon_plus_flat"``,
    ``"epsilon_gamma_box"``, ``"epsilon_alpha2_beta1"``, ``"epsilon_alpha2_beta1_flat"``,
    ``"epsilon_plus"``, ``"epsilon"``, a :class:`Composite`, or a mapping
    ``{module type or name pattern: rule}``. BatchNorm layers after a Conv/Linear are merged into
    it for the call (no parameter is written); residual additions split relevance in proportion
    to their summands. A layer or an operation no rule covers raises, naming it and the
    composite, rather than returning a wrong map.

    Agrees with zennit's composites of the same name (with its BatchNorm canonizer) to 1e-4.

    Rule parameters are keyword-only plain floats (a LightningCLI YAML can set them); left out,
    they take the composite's defaults.

    COST: 1 forward + 1 backward pass, plus one extra forward of each layer under z+ (two under
    alpha-beta, one of double width under gamma, three under z^B); about 1.5 passes on a z+ network.
    The rule-modified weights are computed once per call; inside a
    :func:`~lightning_xai.attribution.propagation.weight_cache` block they are reused across
    calls while the parameters are unchanged (nothing is kept after the block or the call).

    Args:
        composite: The composite (name, :class:`Composite` or mapping).
        epsilon: The epsilon rule's stabiliser (named composites; default 1e-6).
        gamma: The gamma rule's parameter (``"epsilon_gamma_box"``; default 0.25).
        low: The input box's lower bound for z^B (``"epsilon_gamma_box"``, required there, as in
            zennit): the smallest value the inputs take as the model sees them (after
            normalisation). Every call checks the inputs against the box.
        high: Its upper bound, likewise.
        stabilizer: The other rules' stabiliser (named composites; default 1e-6).
        cache_weights: Reuse the rules' derived parameters (BatchNorm-merged weights, their
            positive parts, ...) within the call and, inside a ``weight_cache()`` block, across
            calls; recomputed whenever a parameter or BatchNorm statistic changed (its version
            counter, storage, dtype or device; see
            :mod:`~lightning_xai.attribution.propagation.cache`). ``False``: recompute every time.

    Raises:
        ValueError: unknown composite name, parameters it does not take or it needs
            (``"epsilon_gamma_box"`` without ``low``/``high``); at call time, inputs outside the
            z^B box (the message gives their range).

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> LRP("epsilon_gamma_box", low=0.0, high=1.0)(model, torch.rand(2, 1, 6, 6), target=0).shape
        torch.Size([2, 1, 6, 6])
    """

    registry_name = "lrp"
    _checks_while_attributing = True

    def __init__(
        self,
        composite: CompositeSpec = "epsilon_plus_flat",
        *,
        epsilon: float | None = None,
        gamma: float | None = None,
        low: float | None = None,
        high: float | None = None,
        stabilizer: float | None = None,
        cache_weights: bool = True,
    ) -> None:
        if not isinstance(cache_weights, bool):
            raise TypeError(f"Expected argument `cache_weights` to be a bool, but got {cache_weights!r}.")
        self.cache_weights = cache_weights
        given = {"epsilon": epsilon, "gamma": gamma, "low": low, "high": high, "stabilizer": stabilizer}
        rule_parameters: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self._composite = make_composite(composite, **rule_parameters)
        self.composite = composite
        for key, value in rule_parameters.items():
            setattr(self, key, value)

    def check(self, model: nn.Module) -> None:
        """Check that every layer of ``model`` is supported and every BatchNorm can be merged."""
        plan(model, self._composite, type(self).__name__)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        relevance, _ = propagate(
            model, inputs, target, self._composite, ctx, method=type(self).__name__, cache=self.cache_weights
        )
        return relevance

    def relevances(
        self, model: nn.Module, inputs: Tensor, target: TargetType = None, layers: Sequence[str] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The input relevance and the relevance of each named layer's output (layer-wise view).

        Args:
            model: The model.
            inputs: A ``[B, ...]`` batch.
            target: The class to explain.
            layers: Dotted layer names.

        Returns:
            ``(input relevance, {layer: output relevance})``, detached.

        Examples:
            >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
            >>> r, per_layer = LRP("epsilon").relevances(model, torch.rand(1, 4), 0, ["1"])
            >>> sorted(per_layer)
            ['1']
        """
        result = self._run(
            model,
            inputs,
            lambda x, ctx: propagate(
                model,
                x,
                target,
                self._composite,
                ctx,
                method=type(self).__name__,
                layers=layers,
                cache=self.cache_weights,
            ),
        )
        relevance, per_layer = result
        return relevance, {k: v.detach() for k, v in per_layer.items()}


class DeepTaylor(LRP):
    """Deep Taylor decomposition (Montavon et al. 2017): z+ for every layer above the input (the
    root point of a ReLU neuron on the positive orthant), and for the input layer z^B when the
    input box ``[low, high]`` is known (both bounds; checked against the inputs at every call),
    else w-square (unbounded inputs).

    COST: as :class:`LRP` with z+ everywhere (about 1.5 passes).

    Args:
        low: Lowest input value (z^B), or ``None``.
        high: Highest input value (z^B), or ``None``.
        stabilizer: Added to the rules' denominators.
        cache_weights: As :class:`LRP`.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
        >>> DeepTaylor(low=0.0, high=1.0)(model, torch.rand(2, 1, 6, 6)).shape
        torch.Size([2, 1, 6, 6])
    """

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        stabilizer: float = 1e-6,
        cache_weights: bool = True,
    ) -> None:
        if not isinstance(cache_weights, bool):
            raise TypeError(f"Expected argument `cache_weights` to be a bool, but got {cache_weights!r}.")
        self.cache_weights = cache_weights
        self._composite = deep_taylor(low, high, stabilizer)
        self.low = low
        self.high = high
        self.stabilizer = stabilizer
