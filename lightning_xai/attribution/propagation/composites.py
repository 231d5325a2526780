"""Composites: which rule each layer gets, as a mapping ``(name, module) -> rule``.

Named composites follow the literature (Montavon et al. 2019; Kohlbrenner et al. 2020) and zennit's
choices: ``Linear`` layers get epsilon, convolutions z+ / gamma / alpha2-beta1, the first layer a
special input rule, average pooling proportional redistribution (``Norm``), activations
pass-through. A :class:`Composite` built from a user mapping selects rules by module type or by a
name pattern (``fnmatch``: ``"features.0"``, ``"layer*.conv1"``); name patterns win over types.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any, Union

from torch import nn

from lightning_xai.attribution.propagation.rules import (
    AlphaBeta,
    BoxBound,
    Epsilon,
    Flat,
    Gamma,
    Norm,
    Rule,
    WSquare,
    ZBox,
    ZPlus,
    make_rule,
)

__all__ = [
    "COMPOSITES",
    "Composite",
    "CompositeSpec",
    "LINEAR_TYPES",
    "POOL_TYPES",
    "make_composite",
]

LINEAR_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
"""Layers with weights that rules apply to."""
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
POOL_TYPES = (
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
)
"""Sum pooling: proportional redistribution (``Norm``)."""

RuleKey = Union[type, str]


def _fits(rule: Rule, module: nn.Module) -> bool:
    """Whether a name pattern's ``rule`` applies to ``module`` (patterns skip layers it cannot fit)."""
    if isinstance(module, LINEAR_TYPES):
        return True
    if isinstance(module, POOL_TYPES):
        return not rule.needs_weights
    return rule.name == "pass"


class Composite:
    """A mapping from layers to rules.

    Args:
        rules: ``{module type or name pattern: rule or rule name}``. A layer takes the rule of the
            first name pattern that matches its dotted name, else of the first type it is an
            instance of. Linear layers (``Conv*d``, ``Linear``) no key matches get LRP-0
            (``Epsilon(0)``, gradient x input); average pooling gets ``Norm``.
        first: A rule for the first layer of ``first_types`` (in ``named_modules`` order), or ``None``.
        name: How errors name this composite.
        first_types: The layer types :attr:`first` may apply to.

    Raises:
        TypeError: a key is neither a type nor a str, or a value is not a rule.
        ValueError: an unknown rule name.

    Examples:
        >>> composite = Composite({nn.Conv2d: "zplus", "fc": Epsilon(0.1)}, first=Flat())
        >>> composite.rule_for("features.3", nn.Conv2d(2, 2, 3), first=False)
        ZPlus(stabilizer=1e-06)
    """

    def __init__(
        self,
        rules: Mapping[RuleKey, Rule | str] | None = None,
        first: Rule | str | None = None,
        name: str = "custom",
        first_types: tuple[type, ...] = LINEAR_TYPES,
    ) -> None:
        self.rules: dict[RuleKey, Rule] = {}
        for key, value in (rules or {}).items():
            if not isinstance(key, (type, str)):
                raise TypeError(f"Expected composite keys to be module types or name patterns, but got {key!r}.")
            self.rules[key] = make_rule(value)
        self.first = None if first is None else make_rule(first)
        self.name = name
        self.first_types = first_types

    def is_first_candidate(self, module: nn.Module) -> bool:
        """Whether ``module`` can be the layer :attr:`first` applies to."""
        return self.first is not None and isinstance(module, self.first_types)

    def rule_for(self, name: str, module: nn.Module, *, first: bool) -> Rule | None:
        """The rule of layer ``name`` (``None``: ordinary gradient)."""
        for key, rule in self.rules.items():
            if isinstance(key, str) and fnmatch.fnmatchcase(name, key) and _fits(rule, module):
                return rule
        if first and self.is_first_candidate(module):
            return self.first
        for key, rule in self.rules.items():
            if isinstance(key, type) and isinstance(module, key):
                return rule
        if isinstance(module, LINEAR_TYPES):
            return Epsilon(0.0)
        if isinstance(module, POOL_TYPES):
            return Norm()
        return None

    def __repr__(self) -> str:
        keys = {(k.__name__ if isinstance(k, type) else k): v for k, v in self.rules.items()}
        return f"Composite({keys!r}, first={self.first!r}, name={self.name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Composite) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def _conv_composite(name: str, conv: Rule, epsilon: float, stabilizer: float, first: Rule | None) -> Composite:
    rules: dict[RuleKey, Rule] = {nn.Linear: Epsilon(epsilon)}
    rules.update({t: conv for t in CONV_TYPES})
    rules.update({t: Norm(stabilizer) for t in POOL_TYPES})
    return Composite(rules, first=first, name=name)


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Flat for the first layer, z+ for convolutions, epsilon for ``Linear`` (zennit ``EpsilonPlusFlat``)."""
    return _conv_composite("epsilon_plus_flat", ZPlus(stabilizer), epsilon, stabilizer, Flat(stabilizer))


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """z+ for convolutions, epsilon for ``Linear`` (zennit ``EpsilonPlus``)."""
    return _conv_composite("epsilon_plus", ZPlus(stabilizer), epsilon, stabilizer, None)


def epsilon_gamma_box(
    low: BoxBound, high: BoxBound, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6
) -> Composite:
    """z^B for the first convolution, gamma for the others, epsilon for ``Linear`` (zennit
    ``EpsilonGammaBox``). The input box ``[low, high]`` has no default, as in zennit: it is the
    range of the inputs as the model sees them (see :class:`ZBox`), checked at every call."""
    composite = _conv_composite("epsilon_gamma_box", Gamma(gamma, stabilizer), epsilon, stabilizer, None)
    composite.first = ZBox(low, high, stabilizer)
    composite.first_types = CONV_TYPES
    return composite


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """alpha2-beta1 for convolutions, epsilon for ``Linear`` (zennit ``EpsilonAlpha2Beta1``)."""
    return _conv_composite("epsilon_alpha2_beta1", AlphaBeta(2.0, 1.0, stabilizer), epsilon, stabilizer, None)


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """As :func:`epsilon_alpha2_beta1` with flat for the first layer (zennit ``EpsilonAlpha2Beta1Flat``)."""
    return _conv_composite(
        "epsilon_alpha2_beta1_flat", AlphaBeta(2.0, 1.0, stabilizer), epsilon, stabilizer, Flat(stabilizer)
    )


def epsilon(epsilon: float = 1e-6, stabilizer: float = 1e-6) -> Composite:
    """Epsilon for every linear layer (``epsilon=0``: LRP-0, gradient x input)."""
    return _conv_composite("epsilon", Epsilon(epsilon), epsilon, stabilizer, None)


def deep_taylor(low: float | None = None, high: float | None = None, stabilizer: float = 1e-6) -> Composite:
    """Deep Taylor decomposition (Montavon et al. 2017): z+ for every layer above the input, z^B
    for the input layer when the input box ``[low, high]`` is given, else w-square.

    Raises:
        ValueError: only one of ``low`` and ``high`` given.
    """
    if (low is None) != (high is None):
        raise ValueError(
            f"Deep Taylor takes both bounds of the input box (z^B) or neither (w-square), but got low={low!r}, "
            f"high={high!r}."
        )
    first: Rule = WSquare(stabilizer) if low is None or high is None else ZBox(low, high, stabilizer)
    rules: dict[RuleKey, Rule] = {t: ZPlus(stabilizer) for t in LINEAR_TYPES}
    rules.update({t: Norm(stabilizer) for t in POOL_TYPES})
    return Composite(rules, first=first, name="deep_taylor")


COMPOSITES: dict[str, Callable[..., Composite]] = {
    "epsilon_plus_flat": epsilon_plus_flat,
    "epsilon_gamma_box": epsilon_gamma_box,
    "epsilon_alpha2_beta1": epsilon_alpha2_beta1,
    "epsilon_alpha2_beta1_flat": epsilon_alpha2_beta1_flat,
    "epsilon_plus": epsilon_plus,
    "epsilon": epsilon,
}
"""Named composites and the keyword parameters each takes."""

CompositeSpec = Union[str, Composite, Mapping[RuleKey, Union[Rule, str]]]
"""A composite name from :data:`COMPOSITES`, a :class:`Composite`, or a user mapping."""


def make_composite(spec: CompositeSpec, **parameters: Any) -> Composite:
    """Build a composite from a name (with its rule parameters), a :class:`Composite` or a mapping.

    Raises:
        ValueError: unknown name, or parameters the composite does not take.
        TypeError: ``spec`` of an unsupported type.
    """
    import inspect

    if isinstance(spec, str):
        if spec not in COMPOSITES:
            raise ValueError(f"Expected `composite` to be one of {sorted(COMPOSITES)}, but got {spec!r}.")
        factory = COMPOSITES[spec]
        allowed = list(inspect.signature(factory).parameters)
        unknown = sorted(set(parameters) - set(allowed))
        if unknown:
            raise ValueError(f"Composite {spec!r} takes the rule parameters {allowed}, but got {unknown}.")
        required = [
            name
            for name, p in inspect.signature(factory).parameters.items()
            if p.default is inspect.Parameter.empty and name not in parameters
        ]
        if required:
            hint = (
                " (the input box of z^B, no default: the range of the inputs as the model sees them, after "
                f"normalisation; e.g. LRP({spec!r}, low=0.0, high=1.0) for unnormalised [0, 1] images)"
                if {"low", "high"} & set(required)
                else ""
            )
            raise ValueError(f"Composite {spec!r} needs the rule parameters {required}{hint}.")
        return factory(**parameters)
    if parameters:
        raise ValueError(f"Rule parameters {sorted(parameters)} apply to named composites only; configure the rules.")
    if isinstance(spec, Composite):
        return spec
    if isinstance(spec, Mapping):
        return Composite(spec)
    raise TypeError(f"Expected `composite` to be a name, a Composite or a mapping, but got {type(spec).__name__}.")
