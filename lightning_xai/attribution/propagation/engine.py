"""The propagation engine: registers a composite's rules for one call and checks the forward pass.

:func:`propagate` walks the model once (:func:`plan`): every leaf module must be of a supported
type, every linear layer gets its rule, every BatchNorm its merge partner. It then registers
forward hooks through the call's :class:`~lightning_xai.attribution.base.ExplainContext` (so
:func:`~lightning_xai.attribution.base.observe` removes them on every exit path) and runs the
forward pass under :class:`Tracer`, a ``TorchFunctionMode`` that sees every torch function the
forward calls (functional ones no hook sees included) and raises on one no rule covers
(``torch.sigmoid``, a product of two activations, a convolution outside a module, ...) rather than
return a silently wrong map. One backward pass (``torch.autograd.grad``) then yields the relevance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from lightning_xai.attribution.base import ExplainContext, TargetType, forward_scores
from lightning_xai.attribution.propagation.cache import weight_cache
from lightning_xai.attribution.propagation.canonizers import batchnorm_affine, batchnorm_pairs
from lightning_xai.attribution.propagation.composites import LINEAR_TYPES, POOL_TYPES, Composite
from lightning_xai.attribution.propagation.rules import LayerView, Rule
from lightning_xai.errors import LightningXAIError

__all__ = ["Plan", "Tracer", "plan", "propagate", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS: tuple[type, ...] = (
    *LINEAR_TYPES,
    *POOL_TYPES,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
    nn.Flatten,
    nn.Unflatten,
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.Identity,
)
"""Leaf module types propagation supports (containers are fine: their code is checked by :class:`Tracer`)."""

# torch functions by name (``func.__name__``), as the Tracer classifies them
_METADATA = {
    "__get__",
    "dim",
    "size",
    "numel",
    "ndimension",
    "__len__",
    "is_floating_point",
    "is_contiguous",
    "stride",
    "get_device",
    "element_size",
    "__format__",
    "__repr__",
    "requires_grad_",
    "data_ptr",
    "__bool__",
    "item",
    "tolist",
    "gt",
    "lt",
    "ge",
    "le",
    "eq",
    "ne",
    "__gt__",
    "__lt__",
    "__ge__",
    "__le__",
    "__eq__",
    "__ne__",
    "argmax",
    "argmin",
    "isfinite",
    "isnan",
    "dtype",
    "device",
    "type",
}
_POOLING = {  # the pooling functions (max and average, fixed and adaptive, 1-3d)
    f"{kind}_pool{d}d" for kind in ("max", "adaptive_max", "avg", "adaptive_avg") for d in (1, 2, 3)
}
_STRUCTURE = {  # move, copy, drop or add values: the gradient is the right rule in signal form
    "relu",
    "relu_",
    *_POOLING,
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
    "mean",
    "sum",
    "max",
    "amax",
    "flatten",
    "unflatten",
    "view",
    "view_as",
    "reshape",
    "reshape_as",
    "contiguous",
    "permute",
    "transpose",
    "t",
    "squeeze",
    "unsqueeze",
    "expand",
    "expand_as",
    "repeat",
    "clone",
    "to",
    "float",
    "double",
    "half",
    "type_as",
    "detach",
    "dropout",
    "dropout_",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "feature_dropout",
    "alpha_dropout",
    "__getitem__",
    "cat",
    "concat",
    "concatenate",
    "stack",
    "chunk",
    "split",
    "narrow",
    "select",
    "pad",
    "constant_pad_nd",
    "add",
    "add_",
    "__add__",
    "__radd__",
    "__iadd__",
    "sub",
    "sub_",
    "__sub__",
    "__rsub__",
    "__isub__",
    "neg",
    "__neg__",
    "identity",
}
_SCALING = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "div", "div_", "__truediv__", "__itruediv__"}
_IN_MODULE = {"conv1d", "conv2d", "conv3d", "linear", "batch_norm"}
_NONNEGATIVE = {"relu", "relu_"}  # results >= 0
_KEEPS_SIGN = {  # nonnegative input -> nonnegative result
    *_POOLING,
    "flatten",
    "view",
    "reshape",
    "contiguous",
    "dropout",
}


def _grad_tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    count = 0
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            count += value.requires_grad
        elif isinstance(value, (list, tuple)):
            count += sum(isinstance(v, Tensor) and v.requires_grad for v in value)
    return count


class _Relevance(torch.autograd.Function):
    """Output ``z`` (the layer's value, passed inside a list so autograd sees a fresh output), backward
    ``g -> f_k * g`` into every term ``t_k`` (see :mod:`~lightning_xai.attribution.propagation.rules`)."""

    @staticmethod
    def forward(ctx: Any, box: list[Any], *terms: Tensor) -> Tensor:  # type: ignore[override]
        value, factors = box
        ctx.factors = factors
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        factors = ctx.factors
        ctx.factors = None
        return (None, *(grad if f is None else grad * f for f in factors))


@dataclass
class _State:
    method: str
    inputs: Tensor
    inside: int = 0
    leaves: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (leaf, the layer input it stands for)
    outputs: dict[int, Tensor] = field(default_factory=dict)  # id(linear module) -> its last output
    # id(linear) -> (its input, its output) until its merged BatchNorm runs
    pending: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    # id -> (tensor, version): a ReLU's output (or a pooling / reshape of one), not written since
    nonnegative: dict[int, tuple[Tensor, int]] = field(default_factory=dict)
    cache: bool = True
    composite: str = "custom"  # how errors name the composite

    def mark_nonnegative(self, t: Tensor) -> None:
        """Remember ``t`` (at its current version) as nonnegative."""
        if not t.is_inference():
            self.nonnegative[id(t)] = (t, t._version)

    def is_nonnegative(self, t: Tensor) -> bool:
        """Whether ``t`` is a marked tensor not written since it was marked."""
        entry = self.nonnegative.get(id(t))
        return entry is not None and entry[0] is t and entry[1] == t._version


class Tracer(TorchFunctionMode):
    """Checks every torch function a forward pass calls against the operations rules cover.

    Allowed: metadata and comparisons; operations that move, copy, drop, pool or add values
    (whose gradient is the right relevance rule in signal form, see
    :mod:`~lightning_xai.attribution.propagation.rules`); scaling by a constant; convolutions,
    linear maps and batch norms inside the modules the plan covers. Anything else applied to a
    tensor that carries relevance raises :class:`~lightning_xai.errors.LightningXAIError`.
    """

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        state = self.state
        name = getattr(func, "__name__", "")
        if name in _METADATA or name in _STRUCTURE:
            pass
        elif name in _IN_MODULE:
            if not state.inside and _grad_tensors(args, kwargs):
                raise LightningXAIError(
                    f"{state.method}: the forward pass calls {name} outside a module (functional code); "
                    "no rule can be attached to it. Use the nn module (nn.Conv2d, nn.Linear, nn.BatchNorm2d)."
                )
        elif name in _SCALING:
            if _grad_tensors(args, kwargs) > 1:
                raise LightningXAIError(
                    f"{state.method}: the forward pass multiplies two tensors that both depend on the input "
                    f"({name}); no relevance rule covers a product of activations."
                )
        elif _grad_tensors(args, kwargs):
            raise LightningXAIError(
                f"{state.method}: the forward pass calls {name}, which no relevance rule covers (supported: "
                "Conv/Linear, BatchNorm after them, ReLU, max/average pooling, flatten/reshape, dropout, "
                "residual additions)."
            )
        result = func(*args, **kwargs)
        if isinstance(result, Tensor) and result.is_floating_point():
            if name in _NONNEGATIVE or (
                name in _KEEPS_SIGN and args and isinstance(args[0], Tensor) and state.is_nonnegative(args[0])
            ):
                state.mark_nonnegative(result)
        return result


@dataclass
class Plan:
    """What :func:`plan` found: the rule of each linear / pooling layer and the merged BatchNorms."""

    rules: dict[str, tuple[nn.Module, Rule | None]]
    batchnorms: dict[str, tuple[_BatchNorm, str]]


def plan(model: nn.Module, composite: Composite, method: str) -> Plan:
    """Map every layer of ``model`` to its rule; check layer support and BatchNorm merges.

    Raises:
        ValueError: a leaf module of an unsupported type, a BatchNorm that cannot be merged, or a
            rule on a layer it does not apply to; the message names the layer and the composite.
    """
    where = f"{method}(composite={composite.name!r})"
    pairs = batchnorm_pairs(model)
    rules: dict[str, tuple[nn.Module, Rule | None]] = {}
    batchnorms: dict[str, tuple[_BatchNorm, str]] = {}
    first_seen = False
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            if name not in pairs:
                raise ValueError(
                    f"{where}: BatchNorm layer {name!r} does not directly follow a Conv/Linear layer, so it "
                    "cannot be merged into one; LRP supports BatchNorm only after a Conv/Linear layer."
                )
            batchnorms[name] = (module, pairs[name])
            continue
        is_leaf = next(iter(module.children()), None) is None
        if is_leaf and name and not isinstance(module, SUPPORTED_LAYERS):
            raise ValueError(
                f"{where}: layer {name!r} ({type(module).__name__}) is not supported. Supported layers: "
                "Conv1d/2d/3d, Linear, BatchNorm after them, ReLU, MaxPool, AvgPool, AdaptiveAvgPool, "
                "Flatten, Dropout, Identity and residual additions."
            )
        if isinstance(module, LINEAR_TYPES) or isinstance(module, POOL_TYPES):
            first = False
            if not first_seen and composite.is_first_candidate(module):
                first, first_seen = True, True
            rule = composite.rule_for(name, module, first=first)
            if rule is not None and rule.needs_weights and not isinstance(module, LINEAR_TYPES):
                raise ValueError(
                    f"{where}: rule {rule!r} needs weights, but layer {name!r} is a {type(module).__name__}."
                )
            rules[name] = (module, rule)
        elif isinstance(module, nn.ReLU):
            rule = next((r for k, r in composite.rules.items() if isinstance(k, type) and isinstance(module, k)), None)
            if rule is not None and rule.name != "pass":
                raise ValueError(f"{where}: activation {name!r} takes the pass rule only, but was mapped to {rule!r}.")
    return Plan(rules, batchnorms)


def _leaf_maker(state: _State, x: Tensor, method: str, layer: str, rule: Rule) -> Callable[[Tensor], Tensor]:
    inputs = state.inputs
    if not (x is inputs or (x._base is inputs and x.is_contiguous() and x.numel() == inputs.numel())):
        raise LightningXAIError(
            f"{method}: rule {rule!r} redistributes onto the model input, but layer {layer!r} does not read the "
            "model input directly (only reshapes of it are allowed); map it to another rule."
        )

    def leaf(value: Tensor) -> Tensor:
        tensor = value.detach().requires_grad_(True)
        state.leaves.append((tensor, x))
        return tensor

    return leaf


def _no_leaf(value: Tensor) -> Tensor:
    raise AssertionError("only input-layer rules make leaves")


def _register(model: nn.Module, the_plan: Plan, state: _State, ctx: ExplainContext) -> None:
    merged: dict[str, _BatchNorm] = {linear: bn for bn, linear in the_plan.batchnorms.values()}
    names = {id(m): n for n, (m, _) in the_plan.rules.items()}

    def enter(module: nn.Module, args: Any) -> None:
        state.inside += 1

    def apply_rule(module: nn.Module, name: str, bn: _BatchNorm | None, x: Tensor, output: Tensor, z: Tensor) -> Tensor:
        """The layer's (BatchNorm-merged) output value ``z`` whose backward is the rule's."""
        _, rule = the_plan.rules[name]
        view = LayerView(module, bn, cache=state.cache, nonnegative=state.is_nonnegative(x))
        scale = None
        if bn is not None:
            scale_c, _ = view.affine  # type: ignore[misc]
            scale = scale_c.view((1, -1) + (1,) * (output.ndim - 2))
        terms = None
        if rule is not None:
            leaf = _no_leaf
            if rule.input_layer:
                leaf = _leaf_maker(state, x, state.method, name, rule)
                rule.check_input(x, f"{state.method} (composite {state.composite!r}), layer {name!r}")
            terms = rule.terms(view, x, output, z, scale, leaf)
        if terms is None and bn is not None:
            terms = [(output, scale)]
        if terms is None:
            return output
        return _Relevance.apply([z, [f for _, f in terms]], *[t for t, _ in terms])

    def linear_hook(module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        state.inside -= 1
        name = names[id(module)]
        state.outputs[id(module)] = output
        if name in merged:  # the rule applies at the BatchNorm's output, which is the merged layer's
            state.pending[id(module)] = (args[0], output)
            return None
        with torch._C.DisableTorchFunction():  # our own operations are not the model's: skip the Tracer
            out = apply_rule(module, name, None, args[0], output, output.detach())
        state.outputs[id(module)] = out
        return out

    def pool_hook(module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        _, rule = the_plan.rules[names[id(module)]]
        if rule is None:
            return None
        with torch._C.DisableTorchFunction():
            terms = rule.terms(None, args[0], output, output.detach(), None, _no_leaf)
            if terms is None:
                return None
            return _Relevance.apply([output.detach(), [f for _, f in terms]], *[t for t, _ in terms])

    for _name, (module, _) in the_plan.rules.items():
        if isinstance(module, LINEAR_TYPES):
            ctx.add_hook(module.register_forward_pre_hook(enter))
            ctx.add_hook(module.register_forward_hook(linear_hook))
        else:
            ctx.add_hook(module.register_forward_hook(pool_hook))

    for bn_name, (bn, linear_name) in the_plan.batchnorms.items():
        partner = the_plan.rules[linear_name][0]

        def bn_enter(module: nn.Module, args: Any, _partner: nn.Module = partner, _name: str = bn_name) -> None:
            if id(_partner) not in state.pending or state.outputs.get(id(_partner)) is not args[0]:
                raise LightningXAIError(
                    f"{state.method}: BatchNorm layer {_name!r} does not read the output of "
                    f"{names[id(_partner)]!r} it was to be merged into; LRP supports BatchNorm only directly "
                    "after a Conv/Linear layer."
                )
            state.inside += 1

        def bn_exit(
            module: nn.Module, args: Any, output: Tensor, _partner: nn.Module = partner, _linear: str = linear_name
        ) -> Tensor:
            state.inside -= 1
            x, linear_output = state.pending.pop(id(_partner))
            with torch._C.DisableTorchFunction():
                if module.training:  # batch statistics: the merge uses the running ones
                    scale, shift = batchnorm_affine(module)  # type: ignore[arg-type]
                    shape = (1, -1) + (1,) * (output.ndim - 2)
                    z = torch.addcmul(shift.view(shape), linear_output.detach(), scale.view(shape))
                else:  # the BatchNorm's own output is the merged layer's value
                    z = output.detach()
                out = apply_rule(_partner, _linear, module, x, linear_output, z)  # type: ignore[arg-type]
            state.outputs[id(_partner)] = out
            return out

        ctx.add_hook(bn.register_forward_pre_hook(bn_enter))
        ctx.add_hook(bn.register_forward_hook(bn_exit))


def propagate(
    model: nn.Module,
    inputs: Tensor,
    target: TargetType,
    composite: Composite,
    ctx: ExplainContext,
    *,
    method: str = "LRP",
    layers: Sequence[str] = (),
    cache: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Relevance of ``inputs`` for ``target`` under ``composite``, and of the named layers' outputs.

    One forward pass with the rules' hooks (plus the rules' own extra layer forwards), one
    backward pass. The output relevance is the target score: ``R_out = S_c``.

    Args:
        model: The model (inside ``observe``).
        inputs: A leaf that requires grad.
        target: The class to explain.
        composite: The rules.
        ctx: The call's context; hooks go through it.
        method: Name used in errors.
        layers: Dotted names of layers whose output relevance to return as well.
        cache: Reuse the rules' derived parameters within the call, and across calls inside an
            enclosing :func:`~lightning_xai.attribution.propagation.cache.weight_cache` block.

    Returns:
        ``(relevance shaped like inputs, {layer: relevance of its output})``.
    """
    with weight_cache():  # nothing derived outlives the call unless an outer scope is open
        return _propagate(model, inputs, target, composite, ctx, method, layers, cache)


def _propagate(
    model: nn.Module,
    inputs: Tensor,
    target: TargetType,
    composite: Composite,
    ctx: ExplainContext,
    method: str,
    layers: Sequence[str],
    cache: bool,
) -> tuple[Tensor, dict[str, Tensor]]:
    the_plan = plan(model, composite, method)
    state = _State(method=method, inputs=inputs, cache=cache, composite=composite.name)
    _register(model, the_plan, state, ctx)
    captured: dict[str, Tensor] = {}
    merged_into = {linear: bn for bn, linear in the_plan.batchnorms.values()}
    for layer in layers:

        def capture(module: nn.Module, args: Any, output: Tensor, _layer: str = layer) -> None:
            captured[_layer] = output

        # a layer with a merged BatchNorm: its relevance is that of the merged layer's output
        where = merged_into[layer] if layer in merged_into else model.get_submodule(layer)
        ctx.add_hook(where.register_forward_hook(capture))
    with Tracer(state):
        outputs = model(inputs)
    if state.pending:
        names = {id(m): n for n, (m, _) in the_plan.rules.items()}
        unmerged = sorted(names[i] for i in state.pending)
        raise LightningXAIError(
            f"{method}: the BatchNorm merged into layer(s) {unmerged} did not run after it; LRP supports BatchNorm "
            "only directly after a Conv/Linear layer."
        )
    scores, _, _ = forward_scores(lambda _: outputs, inputs, target)
    extra = [leaf for leaf, _ in state.leaves]
    names = list(captured)
    grads = torch.autograd.grad(scores.sum(), [inputs, *extra, *(captured[n] for n in names)], allow_unused=True)
    g_in = grads[0]
    relevance = inputs.detach() * g_in if g_in is not None else torch.zeros_like(inputs)
    for (leaf, _), grad in zip(state.leaves, grads[1 : 1 + len(extra)]):
        if grad is not None:
            relevance = relevance + (leaf.detach() * grad).reshape(inputs.shape)
    per_layer = {}
    for n, grad in zip(names, grads[1 + len(extra) :]):
        t = captured[n].detach()
        per_layer[n] = t * grad if grad is not None else torch.zeros_like(t)
    return relevance, per_layer
