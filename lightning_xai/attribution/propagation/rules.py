"""LRP rules: small configured objects that rewrite the backward pass of one layer.

Relevance travels backwards as a *signal* ``g`` with ``R = t * g`` for every tensor ``t`` of the
forward pass. In that form the ordinary gradient already is the right rule for every operation
that only moves or adds values (reshapes, max-pooling's winner-take-all, ReLU's pass-through,
residual additions, whose gradient splits relevance in proportion to each summand, conserving it
exactly), so a rule only has to touch the layers with weights. A rule returns *terms* ``(t_k, f_k)``:
tensors ``t_k`` computed from the layer's input ``x`` (with autograd) and detached factors
``f_k``; the layer's output keeps its value ``z`` exactly, and its backward signal ``g`` goes back
as ``sum_k (dt_k/dx)^T (f_k g)`` (a custom autograd function; see
:mod:`~lightning_xai.attribution.propagation.engine`). The cost is what the rule needs: nothing
extra for epsilon (the term is the layer's own output), one more forward of the layer for z+ (the
positive part), two for alpha-beta, one double-width one for gamma.

Rules follow Montavon et al. 2019, "Layer-Wise Relevance Propagation: An Overview", with the
stabiliser conventions of zennit (``t + eps * sign(t)``, ``sign(0) = +1``): epsilon, gamma
(generalised to negative inputs), alpha-beta (any ``alpha - beta = 1``), z+, flat, w-square and
z^B (a bounded input box). Flat, w-square and z^B redistribute relevance onto the *input* itself
rather than onto ``x * g`` and apply to a layer that reads the model's input only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_xai._validation import check_float
from lightning_xai.attribution.propagation.cache import cached
from lightning_xai.attribution.propagation.canonizers import batchnorm_affine, merged_parameters

__all__ = [
    "AlphaBeta",
    "Epsilon",
    "Flat",
    "Gamma",
    "LayerView",
    "Norm",
    "Pass",
    "RULES",
    "Rule",
    "WSquare",
    "ZBox",
    "ZPlus",
    "make_rule",
    "stabilize",
    "Term",
]


def stabilize(t: Tensor, eps: float) -> Tensor:
    """``t + eps * sign(t)`` with ``sign(0) = +1``: a denominator that is never zero."""
    return torch.where(t >= 0, t + eps, t - eps)


class LayerView:
    """What a rule sees of one linear layer for one call: its operation and its parameters, with a
    following BatchNorm (``y = scale * out + shift`` per channel) merged in when the canonizer
    merged one. Derived parameters (the merged weight and bias, their signed parts, gamma's
    weights) come from :func:`~lightning_xai.attribution.propagation.cache.cached`: computed once
    per :func:`~lightning_xai.attribution.propagation.cache.weight_cache` scope and recomputed
    whenever a source tensor changed (its version counter, storage, dtype or device).

    Args:
        module: The ``nn.Conv*d`` or ``nn.Linear``.
        batchnorm: The eval-mode BatchNorm merged into it, or ``None``.
        weight: Override the weight (PatternNet's patterns); the merge does not apply then.
        cache: Keep derived parameters in the open scope (see :mod:`~lightning_xai.attribution.propagation.cache`).
        nonnegative: The layer's input is known to have no negative value (a ReLU's output), so
            rules need not check.

    Examples:
        >>> view = LayerView(nn.Linear(3, 2))
        >>> w_plus, b_plus = view.signed(positive=True)
        >>> bool((w_plus >= 0).all())
        True
    """

    def __init__(
        self,
        module: nn.Module,
        batchnorm: _BatchNorm | None = None,
        weight: Tensor | None = None,
        cache: bool = True,
        nonnegative: bool = False,
    ) -> None:
        self.module = module
        self.batchnorm = None if weight is not None else batchnorm
        self._weight = weight
        self.cache = cache
        self.nonnegative = nonnegative

    def _sources(self) -> list[Tensor | None]:
        m, bn = self.module, self.batchnorm
        sources: list[Tensor | None] = [m.weight, m.bias]  # type: ignore[list-item]
        if bn is not None:
            sources += [bn.weight, bn.bias, bn.running_mean, bn.running_var]
        return sources

    def _derived(self, key: str, compute: Callable[[], Any], *extra: Any) -> Any:
        eps = None if self.batchnorm is None else self.batchnorm.eps
        return cached(self.module, (key, eps, *extra), self._sources(), compute, self.cache)

    @property
    def affine(self) -> tuple[Tensor, Tensor] | None:
        """The merged BatchNorm's ``(scale, shift)`` per channel, or ``None``."""
        bn = self.batchnorm
        if bn is None:
            return None
        return self._derived("affine", lambda: batchnorm_affine(bn))

    def _merged(self) -> tuple[Tensor, Tensor | None]:
        m = self.module
        w: Tensor = m.weight  # type: ignore[assignment]
        b: Tensor | None = m.bias  # type: ignore[assignment]
        if self.batchnorm is None:
            return w, b
        return self._derived("merged", lambda: merged_parameters(m, self.batchnorm)[:2])  # type: ignore[arg-type]

    @property
    def weight(self) -> Tensor:
        """The (merged) weight."""
        return self._weight if self._weight is not None else self._merged()[0]

    @property
    def bias(self) -> Tensor | None:
        """The (merged) bias, or ``None``."""
        return None if self._weight is not None else self._merged()[1]

    def signed(self, positive: bool, offset: float = 0.0) -> tuple[Tensor, Tensor | None]:
        """``(W+, b+ + offset)`` (``positive``) or ``(W-, b- + offset)``, of the merged parameters
        (a zero ``offset`` adds nothing; a missing bias with an ``offset`` becomes ``offset``)."""
        if self._weight is not None:
            return (self._weight.clamp(min=0) if positive else self._weight.clamp(max=0)), None

        def compute() -> tuple[Tensor, Tensor | None]:
            w, b = self._merged()
            clamp = {"min": 0} if positive else {"max": 0}
            b = None if b is None else b.clamp(**clamp)
            if offset:
                b = w.new_full((w.shape[0],), offset) if b is None else b + offset
            return w.clamp(**clamp), b

        return self._derived("plus" if positive else "minus", compute, offset)

    def derived(self, key: str, compute: Callable[[Tensor, Tensor | None], Any], *parameters: Any) -> Any:
        """``compute(weight, bias)`` of the merged parameters, cached under ``(key, *parameters)``."""
        if self._weight is not None:
            with torch.no_grad():
                return compute(self._weight, None)
        return self._derived(key, lambda: compute(*self._merged()), *parameters)

    def has_negative(self, x: Tensor) -> bool:
        """Whether the layer input ``x`` has a negative value (``False`` without looking when it is
        known to be nonnegative)."""
        return not self.nonnegative and bool((x < 0).any())

    def op(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """The layer's own operation with other parameters (``conv`` or ``linear``)."""
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x, weight, bias)
        return m._conv_forward(x, weight, bias)  # type: ignore[operator,union-attr]

    def signed_op(self, x: Tensor, positive: bool, bias: bool = True, offset: float = 0.0) -> Tensor:
        """``op(x, W+, b+) + offset`` (``positive``) or ``op(x, W-, b-) + offset`` with the merged
        parameters (``bias=False``: neither bias nor offset)."""
        if not bias:
            return self.op(x, self.signed(positive)[0], None)
        w, b = self.signed(positive, offset)
        return self.op(x, w, b)


LeafMaker = Callable[[Tensor], Tensor]
"""``leaf(value) -> tensor``: a fresh input-shaped leaf whose relevance ``leaf * d/dleaf`` is added
to the input's relevance (used by the input-layer rules)."""


def _factor(z: Tensor, denominator: Tensor, eps: float) -> Tensor:
    """``z / stab(denominator)``: the output relevance ``z * g`` over the rule's normaliser, per ``g``."""
    return z / stabilize(denominator, eps)


Term = tuple[Tensor, Union[Tensor, None]]
"""``(t, f)``: a tensor with autograd history back to the layer input (or a leaf), and the
detached factor its backward signal is multiplied by (``None``: 1)."""


class Rule:
    """Base of every rule. A rule is configuration (plain floats) plus :meth:`terms`.

    Class attributes:
        needs_weights: applies to layers with weights (``Conv*d``, ``Linear``) only.
        input_layer: redistributes onto the model input itself (flat, w-square, z^B); valid only
            on a layer that reads the model's input.
    """

    needs_weights: ClassVar[bool] = True
    input_layer: ClassVar[bool] = False
    name: ClassVar[str] = "rule"

    def terms(
        self, layer: LayerView | None, x: Tensor, output: Tensor, z: Tensor, scale: Tensor | None, leaf: LeafMaker
    ) -> list[Term] | None:
        """The rule's backward as terms (see the module docstring); ``None`` keeps the gradient.

        Args:
            layer: The layer's merged parameters (``None`` for parameter-free layers).
            x: The layer's input (requires grad).
            output: The module's own output, with its autograd history.
            z: The layer's output value, BatchNorm merged, detached.
            scale: The merged BatchNorm's per-channel scale (``z = scale * output + shift``), or ``None``.
            leaf: Makes input-shaped leaves (input-layer rules).
        """
        raise NotImplementedError

    def check_input(self, x: Tensor, where: str) -> None:
        """Raise if the model input ``x`` is outside what an input-layer rule assumes; ``where``
        names the call, composite and layer for the message. No check by default."""

    def _config(self) -> dict[str, Any]:
        return dict(vars(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._config() == other._config()  # type: ignore[union-attr]

    def __hash__(self) -> int:
        return hash(repr(self))


class Pass(Rule):
    """Pass-through for activations: ``R_in = R_out``. In signal form this is the ordinary
    gradient of a ReLU (zero where the output is zero, where relevance is zero anyway).

    Examples:
        >>> Pass()
        Pass()
    """

    needs_weights = False
    name = "pass"

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        return None


class Epsilon(Rule):
    """LRP-epsilon (Bach et al. 2015): ``R_i = sum_j x_i w_ij R_j / (z_j + eps sign(z_j))``.

    ``epsilon=0`` is LRP-0, whose signal is the plain gradient (relevance = gradient x input).
    Costs nothing beyond an element-wise rescaling of the output's backward signal.

    Args:
        epsilon: The stabiliser added to the denominator (``>= 0``).

    Examples:
        >>> Epsilon(0.25)
        Epsilon(epsilon=0.25)
    """

    name = "epsilon"

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = check_float("epsilon", epsilon, 0.0)

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        if self.epsilon == 0.0:
            return None if scale is None else [(output, scale)]
        factor = _factor(z, z, self.epsilon)
        return [(output, factor if scale is None else factor * scale)]


class Norm(Epsilon):
    """Proportional redistribution for parameter-free linear layers (average pooling, sums): the
    epsilon rule with ``epsilon`` used as a stabiliser only (zennit's ``Norm``).

    Examples:
        >>> Norm()
        Norm(epsilon=1e-06)
    """

    needs_weights = False
    name = "norm"


def _split(layer: LayerView, x: Tensor, positive: bool, negative_inputs: bool, offset: float = 0.0) -> Tensor:
    """``op(x+, W+, b+) + op(x-, W-) + offset`` (``positive``) or ``op(x+, W-, b-) + op(x-, W+) + offset``;
    the inputs are not clamped when none is negative. The constant ``offset`` (a rule's
    stabiliser) rides in the bias, so the denominator ``t + eps`` costs no extra operation and
    ``t`` keeps the gradient of ``t - offset``."""
    if not negative_inputs:
        return layer.signed_op(x, positive, offset=offset)
    first = layer.signed_op(x.clamp(min=0), positive, offset=offset)
    return first + layer.signed_op(x.clamp(max=0), not positive, bias=False)


class ZPlus(Rule):
    """z+ (Montavon et al. 2017): only positive contributions, ``R_i = sum_j z+_ij R_j / sum_i z+_ij``
    with ``z+_ij = x+_i w+_ij + x-_i w-_ij`` (the positive bias joins the denominator).

    Costs one more forward of the layer (two where the input has negative values).

    Args:
        stabilizer: Added to the denominator.

    Examples:
        >>> ZPlus()
        ZPlus(stabilizer=1e-06)
    """

    name = "zplus"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = check_float("stabilizer", stabilizer, 0.0)

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        assert layer is not None
        # pos >= 0, so stab(pos) = pos + eps: the stabiliser rides in the bias
        pos = _split(layer, x, True, layer.has_negative(x), offset=self.stabilizer)
        return [(pos, z / pos.detach())]


class AlphaBeta(Rule):
    """alpha-beta (Bach et al. 2015): ``alpha`` times the positive contributions' share minus
    ``beta`` times the negative ones', each normalised separately; ``alpha - beta = 1``.

    Args:
        alpha: Weight of the positive part (``>= 1``).
        beta: Weight of the negative part (``>= 0``); ``alpha - beta`` must be 1.
        stabilizer: Added to the denominators.

    Raises:
        ValueError: ``alpha - beta != 1`` or a negative value.

    Examples:
        >>> AlphaBeta(2.0, 1.0)
        AlphaBeta(alpha=2.0, beta=1.0, stabilizer=1e-06)
    """

    name = "alpha_beta"

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6) -> None:
        self.alpha = check_float("alpha", alpha, 0.0)
        self.beta = check_float("beta", beta, 0.0)
        if abs(self.alpha - self.beta - 1.0) > 1e-12:
            raise ValueError(f"Expected `alpha - beta` to be 1, but got alpha={alpha}, beta={beta}.")
        self.stabilizer = check_float("stabilizer", stabilizer, 0.0)

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        assert layer is not None
        negative = layer.has_negative(x)
        pos = _split(layer, x, True, negative, offset=self.stabilizer)  # >= 0, plus the stabiliser
        terms: list[Term] = [(pos, z * self.alpha / pos.detach())]
        if self.beta:
            neg = _split(layer, x, False, negative, offset=-self.stabilizer)  # <= 0: stab(neg) = neg - eps
            terms.append((neg, z * -self.beta / neg.detach()))
        return terms


class Gamma(Rule):
    """gamma (Montavon et al. 2019), generalised to inputs of either sign (Andeol et al. 2021, as
    zennit): weights ``w + gamma w+`` for outputs ``z > 0`` (normalised by the positive-favouring
    output) and ``w + gamma w-`` for outputs ``z < 0``.

    Args:
        gamma: How much positive (resp. negative) contributions are favoured (``>= 0``).
        stabilizer: Added to the denominators.

    Examples:
        >>> Gamma(0.25)
        Gamma(gamma=0.25, stabilizer=1e-06)
    """

    name = "gamma"

    def __init__(self, gamma: float = 0.25, stabilizer: float = 1e-6) -> None:
        self.gamma = check_float("gamma", gamma, 0.0)
        self.stabilizer = check_float("stabilizer", stabilizer, 0.0)

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        assert layer is not None
        g = self.gamma
        stack = isinstance(layer.module, nn.Linear) or getattr(layer.module, "groups", 1) == 1

        def weights(w: Tensor, b: Tensor | None) -> tuple[Tensor | None, ...]:
            w_up, w_down = w + g * w.clamp(min=0), w + g * w.clamp(max=0)
            b_up = None if b is None else b + g * b.clamp(min=0)
            b_down = None if b is None else b + g * b.clamp(max=0)
            if not stack:
                return w_up, w_down, b_up, b_down, None, None
            # one forward of both weight sets; the halves are views of the stacked copy (kept once)
            both_w = torch.cat([w_up, w_down])
            both_b = None if b is None else torch.cat([b_up, b_down])  # type: ignore[list-item]
            n = w.shape[0]
            halves_b = (None, None) if both_b is None else (both_b[:n], both_b[n:])
            return both_w[:n], both_w[n:], *halves_b, both_w, both_b

        w_up, w_down, b_up, b_down, both_w, both_b = layer.derived("gamma", weights, g, stack)
        negative = layer.has_negative(x)
        xp = x.clamp(min=0) if negative else x
        if both_w is not None:
            up, down = layer.op(xp, both_w, both_b).chunk(2, dim=1)
        else:
            up, down = layer.op(xp, w_up, b_up), layer.op(xp, w_down, b_down)
        if negative:
            xn = x.clamp(max=0)
            up = up + layer.op(xn, w_down, None)
            down = down + layer.op(xn, w_up, None)
        eps = self.stabilizer
        return [
            (up, z.clamp(min=0) / stabilize(up.detach(), eps)),
            (down, z.clamp(max=0) / stabilize(down.detach(), eps)),
        ]


class Flat(Rule):
    """flat (Lapuschkin et al. 2019): relevance spread uniformly over each output's receptive field,
    ignoring weights and input values. For the layer that reads the model input.

    Args:
        stabilizer: Added to the denominator.

    Examples:
        >>> Flat()
        Flat(stabilizer=1e-06)
    """

    input_layer = True
    name = "flat"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = check_float("stabilizer", stabilizer, 0.0)

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        assert layer is not None
        w = layer.weight
        ones = leaf(torch.ones_like(x))
        if isinstance(layer.module, nn.Linear) or getattr(layer.module, "groups", 1) == 1:
            # every output channel sees the same count: one output channel, broadcast to all
            out = layer.op(ones, w.new_ones((1, *w.shape[1:])), None)
            count = out.detach()[:1]  # the same for every sample and channel; >= 0: stab = count + eps
            shape = list(out.shape)
            channel = -1 if isinstance(layer.module, nn.Linear) else 1
            shape[channel] = w.shape[0]
            return [(out.expand(shape), z / (count + self.stabilizer))]
        out = layer.op(ones, torch.ones_like(w), None)
        return [(out, _factor(z, out.detach(), self.stabilizer))]


class WSquare(Rule):
    """w-square (Montavon et al. 2017): ``R_i = sum_j w_ij^2 R_j / sum_i w_ij^2``, for unbounded
    real-valued inputs. For the layer that reads the model input.

    Args:
        stabilizer: Added to the denominator.

    Examples:
        >>> WSquare()
        WSquare(stabilizer=1e-06)
    """

    input_layer = True
    name = "w_square"

    def __init__(self, stabilizer: float = 1e-6) -> None:
        self.stabilizer = check_float("stabilizer", stabilizer, 0.0)

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        assert layer is not None
        w2, b2 = layer.derived("w_square", lambda w, b: (w**2, None if b is None else b**2))
        out = layer.op(leaf(torch.ones_like(x)), w2, b2)
        return [(out, _factor(z, out.detach(), self.stabilizer))]


BoxBound = Union[float, Tensor]


def _bound_text(bound: BoxBound) -> str:
    if isinstance(bound, Tensor):
        values = bound.flatten().tolist()
        return f"{values[0]:.4g}" if len(values) == 1 else "per-channel " + str([round(v, 4) for v in values])
    return f"{bound:.4g}"


class ZBox(Rule):
    """z^B (Montavon et al. 2017) for inputs bounded in the box ``[low, high]``:
    ``R_i = sum_j (x_i w_ij - l_i w+_ij - h_i w-_ij) R_j / sum_i (...)``. For the layer that reads
    the model input.

    The box is the range the model's inputs can take *as the model sees them* (after any
    normalisation: ``[(0 - mean) / std, (1 - mean) / std]`` per channel for normalised images).
    It has no default (as in zennit): a wrong box gives relevance of the wrong sign and size
    without any other sign of trouble. Every call checks that the inputs lie in the box (one
    reduction and one host sync) and raises otherwise.

    Args:
        low: Lowest input value (a float or a tensor broadcastable to one input, e.g. ``[1, C, 1, 1]``).
        high: Highest input value, likewise.
        stabilizer: Added to the denominator.

    Raises:
        TypeError: a bound is neither a float nor a tensor.
        ValueError: ``low > high`` somewhere; at call time, inputs outside the box.

    Examples:
        >>> ZBox(low=0.0, high=1.0)
        ZBox(low=0.0, high=1.0, stabilizer=1e-06)
    """

    input_layer = True
    name = "zbox"

    def __init__(self, low: BoxBound, high: BoxBound, stabilizer: float = 1e-6) -> None:
        self.low = self._bound("low", low)
        self.high = self._bound("high", high)
        self.stabilizer = check_float("stabilizer", stabilizer, 0.0)
        if bool((torch.as_tensor(self.low) > torch.as_tensor(self.high)).any()):
            raise ValueError(f"Expected the box low <= high, but got low={self.low!r}, high={self.high!r}.")

    def check_input(self, x: Tensor, where: str) -> None:
        """Raise ``ValueError`` if ``x`` leaves ``[low, high]`` by more than float rounding."""
        x = x.detach()
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device)
        high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device)
        slack = 8 * torch.finfo(x.dtype).eps  # relative: a box computed in float64, inputs in x's dtype
        below = x < low - slack * low.abs().clamp(min=1)
        above = x > high + slack * high.abs().clamp(min=1)
        if not bool((below | above).any()):
            return
        box = f"[{_bound_text(self.low)}, {_bound_text(self.high)}]"
        raise ValueError(
            f"{where}: z^B (ZBox) assumes inputs in the box {box}, but the inputs span "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] ({int(below.sum())} values below, {int(above.sum())} "
            "above). Set the box to the range of the inputs as the model sees them (after normalisation), e.g. "
            "LRP('epsilon_gamma_box', low=..., high=...), DeepTaylor(low=..., high=...) or ZBox(low=..., high=...); "
            "per-channel bounds are tensors broadcastable to one input, e.g. [1, C, 1, 1]."
        )

    @staticmethod
    def _bound(name: str, value: object) -> BoxBound:
        if isinstance(value, Tensor):
            return value.detach().clone()
        return check_float(name, value)

    def _config(self) -> dict[str, Any]:
        cfg = dict(vars(self))
        for key in ("low", "high"):
            if isinstance(cfg[key], Tensor):
                cfg[key] = cfg[key].tolist()
        return cfg

    def terms(self, layer, x, output, z, scale, leaf):  # type: ignore[no-untyped-def,override]
        assert layer is not None
        w, b = layer.weight, layer.bias
        x0 = leaf(x.detach())
        low = leaf(torch.as_tensor(self.low, dtype=x.dtype, device=x.device).expand_as(x).clone())
        high = leaf(torch.as_tensor(self.high, dtype=x.dtype, device=x.device).expand_as(x).clone())
        (w_plus, b_plus), (w_minus, b_minus) = layer.signed(True), layer.signed(False)
        out = layer.op(x0, w, b) - layer.op(low, w_plus, b_plus) - layer.op(high, w_minus, b_minus)
        return [(out, _factor(z, out.detach(), self.stabilizer))]


RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (Pass, Epsilon, Norm, ZPlus, AlphaBeta, Gamma, Flat, WSquare, ZBox)
}
"""Rules by name, for composites given as plain mappings (YAML)."""


def make_rule(spec: Rule | str) -> Rule:
    """A :class:`Rule` from a rule or a rule name in :data:`RULES` (default parameters).

    Raises:
        ValueError: unknown name.
        TypeError: neither a rule nor a str.
    """
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, str):
        if spec not in RULES:
            raise ValueError(f"Expected a rule name in {sorted(RULES)}, but got {spec!r}.")
        if spec == ZBox.name:
            raise ValueError(
                "Rule 'zbox' needs the input box, which has no default: use ZBox(low=..., high=...) with the "
                "range of the inputs as the model sees them (after normalisation)."
            )
        return RULES[spec]()
    raise TypeError(f"Expected a Rule or a rule name, but got {spec!r} of type {type(spec).__name__}.")
