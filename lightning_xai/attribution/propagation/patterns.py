"""PatternNet and PatternAttribution (Kindermans et al. 2018, "Learning how to explain neural networks").

A linear neuron ``y = w^T x`` sees signal plus distractor; its weight vector ``w`` (the *filter*)
cancels the distractor and so does not point along the signal. The *pattern* ``a`` is the signal
direction, estimated from data. The paper's two-component estimator ``S_a+-`` treats the regimes
of a ReLU neuron apart: over the samples where ``y > 0``

    a+ = cov+(x, y) / (w^T cov+(x, y)),      cov+(x, y) = E+[x y] - E+[x] E+[y],

and ``a-`` likewise over ``y <= 0``. For a convolution, ``x`` is an input patch and every output
position a sample. :class:`PatternStatistics` accumulates the needed sums (``n``, ``sum x``,
``sum y``, ``sum x y`` per regime and output unit) in float64 from any stream of batches, without
autograd: the :class:`~lightning_xai.callbacks.PatternEstimator` callback feeds it the activations
of the training forward passes.

* :class:`PatternNet` projects the output back to input space along the patterns: the backward
  pass through each linear layer uses ``A`` in place of ``W`` (``a+`` where the unit's output is
  positive, ``a-`` elsewhere), ReLUs and max pooling gate as in the gradient, and the pass starts
  from the target score ``y``: on a linear model the map is the estimated signal ``a y``.
* :class:`PatternAttribution` uses ``W * A`` (element-wise) instead: the relevance of the paper's
  root point ``x0 = x - a y`` (Deep Taylor with the learned pattern), ``(w * a) y`` on a linear model.

Patterns come from a dict ``{layer name: {"a_plus", "a_minus"}}`` (as :meth:`PatternStatistics.patterns`
returns and ``torch.save`` writes), a file saved from one (loaded with ``weights_only=True``), or,
by default, the latest patterns a :class:`~lightning_xai.callbacks.PatternEstimator` published for
that model (:func:`set_patterns` / :func:`get_patterns`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import Tensor, nn
from torch.nn import grad as nn_grad
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType, forward_scores
from lightning_xai.attribution.propagation.canonizers import batchnorm_affine, batchnorm_pairs
from lightning_xai.attribution.propagation.rules import LayerView
from lightning_xai.errors import LightningXAIError

__all__ = [
    "PatternAttribution",
    "PatternNet",
    "PatternStatistics",
    "Patterns",
    "estimate_patterns",
    "get_patterns",
    "merged_batchnorms",
    "pattern_layers",
    "set_patterns",
]

Patterns = dict[str, dict[str, Tensor]]
"""``{layer name: {"a_plus": Tensor, "a_minus": Tensor}}``, each shaped like the layer's weight."""

PatternSource = Union[str, os.PathLike, Mapping[str, Mapping[str, Tensor]], None]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WEIGHT_GRAD = {1: nn_grad.conv1d_weight, 2: nn_grad.conv2d_weight, 3: nn_grad.conv3d_weight}


def pattern_layers(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The layers patterns are estimated for: every ``Linear`` / ``Conv*d`` (or the named ones).

    Raises:
        ValueError: a named layer is missing or is not a Linear/Conv layer.
    """
    found = {name: m for name, m in model.named_modules() if isinstance(m, _LAYERS)}
    if layers is None:
        return found
    missing = [n for n in layers if n not in found]
    if missing:
        raise ValueError(f"Expected Linear/Conv layer names, but got {missing}; valid: {sorted(found)}.")
    return {n: found[n] for n in layers}


def merged_batchnorms(model: nn.Module, layers: Mapping[str, nn.Module]) -> dict[str, _BatchNorm]:
    """``{layer name: the BatchNorm merged into it}`` for the ``layers`` a BatchNorm directly follows
    (found as LRP's canonizer finds them, see
    :func:`~lightning_xai.attribution.propagation.canonizers.batchnorm_pairs`). Patterns of such a
    layer are those of the merged layer ``y' = scale * (W x + b) + shift`` (eval-mode BatchNorm):
    estimated from ``y'``, normalised with the merged weight ``scale * W``, applied without the
    BatchNorm's own backward.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> sorted(merged_batchnorms(net, pattern_layers(net)))
        ['0']
    """
    by_layer = {linear: bn for bn, linear in batchnorm_pairs(model).items()}
    return {name: model.get_submodule(by_layer[name]) for name in layers if name in by_layer}  # type: ignore[misc]


def _merged_weight(layer: nn.Module, batchnorm: _BatchNorm | None) -> Tensor:
    weight: Tensor = layer.weight.detach()  # type: ignore[union-attr]
    if batchnorm is None:
        return weight
    return LayerView(layer, batchnorm, cache=False).weight.detach()


class PatternStatistics:
    """Streaming sums for the two-component pattern estimator, per layer, in float64.

    Call :meth:`update` with a layer's input and output on every batch (no autograd is recorded;
    the tensors are only read); :meth:`patterns` turns the sums into patterns with the layer's
    current weights.

    Examples:
        >>> layer = nn.Linear(3, 2)
        >>> stats = PatternStatistics()
        >>> x = torch.randn(64, 3)
        >>> stats.update("fc", layer, x, layer(x))
        >>> stats.patterns({"fc": layer})["fc"]["a_plus"].shape
        torch.Size([2, 3])
    """

    KEYS = ("n", "x", "y", "xy")

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, Tensor]] = {}

    def reset(self) -> None:
        """Forget every sum."""
        self.sums = {}

    @torch.no_grad()
    def update(self, name: str, layer: nn.Module, x: Tensor, y: Tensor, batchnorm: _BatchNorm | None = None) -> None:
        """Add one batch: ``x`` the layer's input, ``y`` its output (read only, never modified).

        With ``batchnorm`` (the BatchNorm merged into the layer), the statistics are those of the
        merged layer: its output ``y' = scale * y + shift`` with the BatchNorm's running
        statistics (its eval-mode map, the one explainers propagate through), also in training.
        """
        x, y = x.detach(), y.detach()
        if batchnorm is not None:
            scale, shift = batchnorm_affine(batchnorm)
            shape = (1, -1) + (1,) * (y.ndim - 2)
            y = torch.addcmul(shift.to(y.dtype).view(shape), y, scale.to(y.dtype).view(shape))
        weight: Tensor = layer.weight  # type: ignore[assignment]
        parts: dict[str, Tensor] = {}
        for regime, mask in (("plus", y > 0), ("minus", y <= 0)):
            m = mask.to(y.dtype)
            ym = y * m
            if isinstance(layer, nn.Linear):
                x2, ym2, m2 = x.reshape(-1, x.shape[-1]), ym.reshape(-1, y.shape[-1]), m.reshape(-1, y.shape[-1])
                sx, sxy = m2.T @ x2, ym2.T @ x2
                n, sy = m2.sum(0), ym2.sum(0)
            else:
                dims = weight.ndim - 2
                grad_w = _WEIGHT_GRAD[dims]
                kwargs = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
                if layer.padding_mode != "zeros":
                    raise ValueError(
                        f"PatternStatistics: padding_mode={layer.padding_mode!r} of layer {name!r} is not supported."
                    )
                sx = grad_w(x, weight.shape, m, **kwargs)
                sxy = grad_w(x, weight.shape, ym, **kwargs)
                reduce = [0, *range(2, y.ndim)]
                n, sy = m.sum(reduce), ym.sum(reduce)
            parts.update({f"n_{regime}": n, f"x_{regime}": sx, f"y_{regime}": sy, f"xy_{regime}": sxy})
        store = self.sums.setdefault(name, {})
        for key, value in parts.items():
            value = value.to(torch.float64)
            if key in store:
                store[key] += value
            else:
                store[key] = value.clone()

    def patterns(
        self,
        layers: Mapping[str, nn.Module],
        eps: float = 1e-12,
        batchnorms: Mapping[str, _BatchNorm] | None = None,
    ) -> Patterns:
        """``{name: {"a_plus", "a_minus"}}`` from the sums and the layers' current weights (in the
        weights' dtype and device). A unit with no samples in a regime, or a vanishing
        ``w^T cov``, gets a zero pattern there. ``batchnorms``: the BatchNorms merged into layers
        (as given to :meth:`update`), whose merged weight normalises the patterns."""
        out: Patterns = {}
        batchnorms = batchnorms or {}
        for name, store in self.sums.items():
            layer = layers[name]
            weight = _merged_weight(layer, batchnorms.get(name))
            w = weight.to(torch.float64).cpu()
            result = {}
            for regime in ("plus", "minus"):
                n = store[f"n_{regime}"].cpu()
                shape = (-1,) + (1,) * (w.ndim - 1)
                safe = n.clamp(min=1).view(shape)
                ex = store[f"x_{regime}"].cpu() / safe
                ey = store[f"y_{regime}"].cpu().view(shape) / safe
                exy = store[f"xy_{regime}"].cpu() / safe
                cov = exy - ex * ey
                denom = (w * cov).flatten(1).sum(1).view(shape)
                valid = (n.view(shape) > 0) & (denom.abs() > eps)
                a = torch.where(valid, cov / torch.where(valid, denom, torch.ones_like(denom)), torch.zeros_like(cov))
                result[f"a_{regime}"] = a.to(dtype=weight.dtype, device=weight.device)
            out[name] = result
        return out

    def state_dict(self) -> dict[str, dict[str, Tensor]]:
        """The sums (CPU float64 tensors), for a checkpoint."""
        return {name: {k: v.cpu() for k, v in store.items()} for name, store in self.sums.items()}

    def load_state_dict(self, state: Mapping[str, Mapping[str, Tensor]]) -> None:
        """Restore sums saved by :meth:`state_dict`."""
        self.sums = {name: {k: v.clone() for k, v in store.items()} for name, store in state.items()}

    def all_reduce(self, reduce: Any) -> None:
        """Sum every statistic across processes with ``reduce(tensor) -> tensor`` (e.g. the
        strategy's ``reduce(t, reduce_op="sum")``)."""
        for store in self.sums.values():
            for key in list(store):
                store[key] = reduce(store[key])


@torch.no_grad()
def estimate_patterns(model: nn.Module, batches: Iterable[Tensor], layers: Sequence[str] | None = None) -> Patterns:
    """Patterns of ``model``'s Linear/Conv layers from a stream of input batches (one forward
    pass each, no autograd; hooks removed on every exit path; the model's mode is left as is).
    A layer a BatchNorm directly follows gets the patterns of the merged layer
    (:func:`merged_batchnorms`).

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        >>> patterns = estimate_patterns(model, [torch.randn(32, 2) for _ in range(3)])
        >>> sorted(patterns)
        ['0', '2']
    """
    chosen = pattern_layers(model, layers)
    batchnorms = merged_batchnorms(model, chosen)
    stats = PatternStatistics()
    handles = []
    try:
        for name, layer in chosen.items():

            def hook(module: nn.Module, args: Any, output: Tensor, _name: str = name) -> None:
                stats.update(_name, module, args[0], output, batchnorms.get(_name))

            handles.append(layer.register_forward_hook(hook))
        for batch in batches:
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return stats.patterns(chosen, batchnorms=batchnorms)


_PUBLISHED: weakref.WeakKeyDictionary[nn.Module, dict[str, Tensor]] = weakref.WeakKeyDictionary()


def set_patterns(model: nn.Module, patterns: Patterns) -> None:
    """Publish ``patterns`` (keyed by ``model``'s layer names) as the latest for those layers.

    They are held per layer module by weak reference, so nothing is attached to the model and any
    model that contains the layers (the bare network inside a LightningModule, a DDP or
    ``torch.compile`` wrapper) finds them; this is what :class:`PatternNet` uses by default.
    """
    for name, pattern in patterns.items():
        _PUBLISHED[model.get_submodule(name)] = pattern


def get_patterns(model: nn.Module) -> Patterns | None:
    """The latest published patterns of ``model``'s Linear/Conv layers (by its own layer names),
    or ``None`` when none of its layers has any."""
    found = {name: _PUBLISHED[m] for name, m in pattern_layers(model).items() if m in _PUBLISHED}
    return found or None


def _match(patterns: Mapping[str, Mapping[str, Tensor]], name: str) -> Mapping[str, Tensor] | None:
    """The patterns of layer ``name``: the same key, or the one key that is a dotted suffix of
    ``name`` or has ``name`` as its dotted suffix (patterns of a bare network used on a wrapper)."""
    if name in patterns:
        return patterns[name]
    if not name:  # the model is the layer itself
        return next(iter(patterns.values())) if len(patterns) == 1 else None
    close = [k for k in patterns if name.endswith("." + k) or k.endswith("." + name)]
    return patterns[close[0]] if len(close) == 1 else None


def _load(source: PatternSource, model: nn.Module, method: str) -> Mapping[str, Mapping[str, Tensor]]:
    if source is None:
        found = get_patterns(model)
        if found is None:
            raise ValueError(
                f"{method}: no patterns for this model. Train it with the PatternEstimator callback, pass "
                "`patterns=` (a dict from estimate_patterns or a file saved from one), or call set_patterns()."
            )
        return found
    if isinstance(source, (str, os.PathLike)):
        return torch.load(source, map_location="cpu", weights_only=True)
    return source


class _PatternMethod(Explainer):
    """Backward pass with pattern-derived weights in every Linear/Conv layer."""

    _attribution = False

    def __init__(self, patterns: PatternSource = None, two_component: bool = True) -> None:
        if patterns is not None and not isinstance(patterns, (str, os.PathLike, Mapping)):
            raise TypeError(
                f"Expected argument `patterns` to be a path, a dict or None, but got {type(patterns).__name__}."
            )
        if not isinstance(two_component, bool):
            raise TypeError(f"Expected argument `two_component` to be a bool, but got {two_component!r}.")
        self.patterns = patterns
        self.two_component = two_component

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        method = type(self).__name__
        patterns = _load(self.patterns, model, method)
        layers = pattern_layers(model)
        matched = {name: _match(patterns, name) for name in layers}
        missing = sorted(name for name, p in matched.items() if p is None)
        if missing:
            raise ValueError(
                f"{method}: no patterns for layers {missing} (patterns hold {sorted(patterns)[:20]}); estimate them "
                "for every Linear/Conv layer."
            )
        batchnorms = merged_batchnorms(model, layers)
        for name, layer in layers.items():
            bn = batchnorms.get(name)
            weight = _merged_weight(layer, bn)
            pattern = matched[name]
            assert pattern is not None
            plus = pattern["a_plus"].to(device=weight.device, dtype=weight.dtype)
            minus = pattern["a_minus"].to(device=weight.device, dtype=weight.dtype)
            if plus.shape != weight.shape or minus.shape != weight.shape:
                raise ValueError(
                    f"{method}: patterns of layer {name!r} have shape {tuple(plus.shape)}, its weight {tuple(weight.shape)}."
                )
            if self._attribution:
                plus, minus = plus * weight, minus * weight
            if bn is None:
                ctx.add_hook(layer.register_forward_hook(self._hook(plus, minus)))
            else:
                self._merged_hooks(ctx, name, layer, bn, plus, minus)
        scores, _, _ = forward_scores(model, inputs, target)
        (grad,) = torch.autograd.grad(scores, inputs, grad_outputs=scores.detach())
        return grad

    def _hook(self, plus: Tensor, minus: Tensor) -> Any:
        two = self.two_component

        def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            return _replace_backward(module, args[0], output, plus, minus, two)

        return hook

    def _merged_hooks(
        self, ctx: ExplainContext, name: str, layer: nn.Module, bn: _BatchNorm, plus: Tensor, minus: Tensor
    ) -> None:
        """Layer + BatchNorm as one merged layer: the BatchNorm's output keeps its value and gets
        the merged layer's pattern backward (the BatchNorm's own backward is not used)."""
        seen: dict[str, Any] = {}
        method, two = type(self).__name__, self.two_component

        def store(module: nn.Module, args: Any, output: Tensor) -> None:
            seen["x"], seen["out"] = args[0], output

        def merged(module: nn.Module, args: Any, output: Tensor) -> Tensor:
            if seen.get("out") is not args[0]:
                raise LightningXAIError(
                    f"{method}: the BatchNorm after layer {name!r} does not read that layer's output, so the two "
                    "cannot be explained as one merged layer."
                )
            x = seen.pop("x")
            seen.pop("out")
            return _replace_backward(layer, x, output, plus, minus, two)

        ctx.add_hook(layer.register_forward_hook(store))
        ctx.add_hook(bn.register_forward_hook(merged))


def _replace_backward(layer: nn.Module, x: Tensor, output: Tensor, plus: Tensor, minus: Tensor, two: bool) -> Tensor:
    """``output``'s value, with the backward of ``op(x, A)`` (``a+`` where ``output > 0``, ``a-``
    elsewhere with ``two``)."""
    view = LayerView(layer, weight=plus)
    a = view.op(x, plus, None)
    if two:
        positive = (output > 0).detach()
        a = torch.where(positive, a, view.op(x, minus, None))
    return output.detach() + (a - a.detach())


class PatternNet(_PatternMethod):
    """PatternNet (Kindermans et al. 2018): the target score projected back along the signal
    patterns, an estimate of the input's signal component.

    The backward pass uses each layer's pattern ``A`` in place of its weight (``a+`` where a unit
    is active, ``a-`` elsewhere with ``two_component``; ``a+`` everywhere without), gates through
    ReLUs and max pooling like the gradient, and starts from the score itself. On a linear model
    ``y = w^T x`` the map is ``a y``. A BatchNorm directly after a Linear/Conv layer is merged
    into it (its patterns are the merged layer's, as :func:`estimate_patterns` and the
    ``PatternEstimator`` estimate them); other BatchNorms keep their ordinary (affine) backward.

    COST: 1 forward + 1 backward pass (plus one more layer forward per layer with ``two_component``).

    Args:
        patterns: ``None`` (the latest patterns a ``PatternEstimator`` published for the model), a
            dict ``{layer: {"a_plus", "a_minus"}}``, or the path of one saved with ``torch.save``.
        two_component: Use ``a-`` for inactive units (the paper's ``S_a+-``); ``False``: ``a+`` only.

    Raises:
        TypeError: ``patterns`` or ``two_component`` of the wrong type.

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> patterns = estimate_patterns(model, [torch.randn(64, 2)])
        >>> PatternNet(patterns)(model, torch.randn(3, 2), target=0).shape
        torch.Size([3, 2])
    """

    signed = True


class PatternAttribution(_PatternMethod):
    """PatternAttribution (Kindermans et al. 2018): relevance with the root point the patterns
    define, i.e. the backward pass of :class:`PatternNet` with ``W * A`` (element-wise) in place
    of ``A``. On a linear model the map is ``(w * a) y``.

    COST: as :class:`PatternNet`.

    Args:
        patterns: As :class:`PatternNet`.
        two_component: As :class:`PatternNet`.

    Examples:
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> patterns = estimate_patterns(model, [torch.randn(64, 2)])
        >>> PatternAttribution(patterns)(model, torch.randn(3, 2), target=1).shape
        torch.Size([3, 2])
    """

    _attribution = True
