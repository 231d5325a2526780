"""DeepLift with the Rescale rule (Shrikumar et al. 2017).

Contributions of the difference from a reference input: every nonlinearity ``y = f(x)`` passes
back the multiplier ``(f(x) - f(x0)) / (x - x0)`` instead of its derivative (the derivative where
``|x - x0| < 1e-10``), linear layers their ordinary gradient, and the map is ``(x - x0) * g``.
Its sum is ``f(x) - f(x0)`` for the target score (completeness, "summation-to-delta").

The reference activations come from one forward pass of the baseline without autograd; the
nonlinearities of the second, differentiated forward pass are paired with them in call order.
ReLUs are found however they are called (modules reused or in place, ``F.relu``, ``torch.relu``,
``Tensor.relu``), like :func:`~lightning_xai.attribution.gradient.modified_relu` finds them; max
pooling follows captum's rule (the larger of the two pooled outputs decides, relevance routed
through both argmaxes), with overlapping windows accumulated rather than overwritten.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lightning_xai.attribution.base import ExplainContext, Explainer, TargetType, forward_scores
from lightning_xai.attribution.path import SingleBaseline, make_baseline
from lightning_xai.attribution.propagation.engine import (
    _IN_MODULE,
    _METADATA,
    _SCALING,
    _STRUCTURE,
    SUPPORTED_LAYERS,
    _grad_tensors,
)
from lightning_xai.errors import LightningXAIError

__all__ = ["DeepLift", "DEEPLIFT_LAYERS"]

_EPS = 1e-10
_RELU = {"relu", "relu_"}
_ELEMENTWISE = {"sigmoid": torch.sigmoid, "tanh": torch.tanh}
_MAXPOOL = {"max_pool1d", "max_pool2d", "max_pool3d"}
_NONLINEAR_STRUCTURE = {
    "max",
    "amax",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "max_pool1d_with_indices",
    "max_pool2d_with_indices",
    "max_pool3d_with_indices",
}
_LINEAR_OK = (_METADATA | _STRUCTURE | _IN_MODULE) - _NONLINEAR_STRUCTURE

DEEPLIFT_LAYERS: tuple[type, ...] = (
    *(
        t
        for t in SUPPORTED_LAYERS
        if not issubclass(t, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d))
    ),
    nn.Sigmoid,
    nn.Tanh,
)
"""Leaf module types DeepLift supports: Conv1d/2d/3d, Linear, BatchNorm (anywhere: eval-mode
BatchNorm is affine), ReLU (in place too), Sigmoid, Tanh, MaxPool, AvgPool, AdaptiveAvgPool,
Flatten, Unflatten, Dropout, Identity; containers are fine (their forward code is checked
operation by operation, residual additions included)."""


class _Rescale(torch.autograd.Function):
    """Forward ``f(x)`` (in place for ``relu_``); backward ``g * multiplier``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, ref: Tensor, fn: Callable[[Tensor], Tensor], inplace: bool) -> Tensor:  # type: ignore[override]
        delta_in = x - ref
        small = delta_in.abs() < _EPS
        if fn is torch.relu:
            slope = (x > 0).to(x.dtype)
        else:
            with torch.enable_grad():
                xg = x.detach().requires_grad_(True)
                (slope,) = torch.autograd.grad(fn(xg).sum(), xg)
        if inplace:
            out = torch.relu_(x)
            ctx.mark_dirty(x)
        else:
            out = fn(x)
        multiplier = torch.where(
            small, slope, (out - fn(ref)) / torch.where(small, torch.ones_like(delta_in), delta_in)
        )
        ctx.save_for_backward(multiplier)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (multiplier,) = ctx.saved_tensors
        return grad * multiplier, None, None, None


class _MaxPool(torch.autograd.Function):
    """Max pooling forward; DeepLift's max-pooling multipliers backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, ref: Tensor, dims: int, params: dict[str, Any]) -> Tensor:  # type: ignore[override]
        pool = getattr(F, f"max_pool{dims}d")
        out, out_ref = pool(x, **params), pool(ref, **params)
        ctx.save_for_backward(x, ref, out, out_ref)
        ctx.pool, ctx.params = pool, params
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        x, ref, out, out_ref = ctx.saved_tensors
        top = torch.max(out, out_ref)

        def route(values: Tensor, source: Tensor) -> Tensor:
            """``values`` sent back through max pooling at ``source`` (to its argmaxes, overlapping
            windows accumulated): the pooling's own backward, deterministic where it is."""
            with torch.enable_grad():
                leaf = source.detach().requires_grad_(True)
                (routed,) = torch.autograd.grad(ctx.pool(leaf, **ctx.params), leaf, values)
            return routed

        routed = route(grad * (top - out_ref), x) + route(grad * (out - top), ref)
        plain = route(grad, x)
        delta_in = x - ref
        small = delta_in.abs() < _EPS
        new = torch.where(small, plain, routed / torch.where(small, torch.ones_like(delta_in), delta_in))
        return new, None, None, None


def _pool_params(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    params = dict(zip(names, args[1:]))
    params.update({k: v for k, v in kwargs.items() if k in names})
    return params


class _DeepLiftMode(TorchFunctionMode):
    """Records nonlinearity inputs (reference pass) or replaces the nonlinearities (main pass)."""

    def __init__(self, method: str, refs: list[Tensor] | None, model: nn.Module | None = None) -> None:
        super().__init__()
        self.method = method
        self.recording = refs is None
        self.refs: list[Tensor] = [] if refs is None else refs
        self.position = 0
        self.model = model

    def _where(self) -> str:
        """`` in layer 'name' (Type)``: the innermost module of ``model`` whose ``forward`` is on the
        call stack (looked up only when an error is raised, so the forward pass pays nothing)."""
        if self.model is None:
            return ""
        names = {id(m): n for n, m in self.model.named_modules()}
        frame = sys._getframe(1)
        while frame is not None:
            owner = frame.f_locals.get("self") if frame.f_code.co_name == "forward" else None
            if isinstance(owner, nn.Module) and id(owner) in names:
                return f" in layer {names[id(owner)] or '(the model)'!r} ({type(owner).__name__})"
            frame = frame.f_back  # type: ignore[assignment]
        return ""

    def _ref(self, x: Tensor, name: str) -> Tensor:
        if self.recording:
            self.refs.append(x.detach().clone())
            return x
        if self.position >= len(self.refs) or self.refs[self.position].shape != x.shape:
            raise LightningXAIError(
                f"{self.method}: the forward pass of the input calls {name} where that of the baseline did "
                "not (data-dependent control flow); DeepLift needs the same computation for both."
            )
        ref = self.refs[self.position]
        self.position += 1
        return ref

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _RELU or name in _ELEMENTWISE or name in _MAXPOOL:
            x = args[0] if args else kwargs["input"]
            if name in _MAXPOOL and (kwargs.get("return_indices") or (len(args) > 6 and args[6])):
                raise LightningXAIError(
                    f"{self.method}: max pooling with return_indices{self._where()} is not supported."
                )
            ref = self._ref(x, name)
            if self.recording:
                return func(*args, **kwargs)
            if name in _MAXPOOL:
                return _MaxPool.apply(x, ref, int(name[-2]), _pool_params(args, kwargs))
            if name in _RELU:
                inplace = name == "relu_" or bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
                return _Rescale.apply(x, ref, torch.relu, inplace)
            return _Rescale.apply(x, ref, _ELEMENTWISE[name], False)
        if name in _LINEAR_OK or (name in _SCALING and _grad_tensors(args, kwargs) <= 1):
            return func(*args, **kwargs)
        if not self.recording and _grad_tensors(args, kwargs):
            raise LightningXAIError(
                f"{self.method}: the forward pass calls {name}{self._where()}, which DeepLift's Rescale rule does "
                "not cover (supported: linear layers, BatchNorm, ReLU, sigmoid, tanh, max/average pooling, "
                "flatten/reshape, dropout, additions)."
            )
        return func(*args, **kwargs)


class DeepLift(Explainer):
    """DeepLift, Rescale rule (Shrikumar et al. 2017), as captum ``DeepLift``.

    ``(x - x0) * g`` where ``g`` is the gradient of the target score with every nonlinearity's
    derivative replaced by its secant ``(f(x) - f(x0)) / (x - x0)`` between the input and the
    baseline's activations. Completeness: the map sums to ``S_c(x) - S_c(x0)``. Works on models
    that reuse a ReLU module (torchvision's ResNets, where captum's ``DeepLift`` fails), with
    in-place and functional ReLUs. Unsupported operations raise rather than give a wrong map.

    COST: 1 forward pass of the baseline (no autograd) + 1 forward + 1 backward pass of the batch.

    Args:
        baseline: The reference: ``"zero"``, ``"blur"``, ``"uniform"``, ``"gaussian"`` (see
            :func:`~lightning_xai.attribution.path.make_baseline`), or a tensor broadcastable to
            the inputs.

    Raises:
        ValueError: an unknown baseline name.
        TypeError: a baseline of an unsupported type.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> DeepLift()(model, torch.rand(2, 4), target=1).shape
        torch.Size([2, 4])
    """

    def __init__(self, baseline: SingleBaseline = "zero") -> None:
        if isinstance(baseline, str):
            make_baseline(baseline, torch.zeros(1, 1))  # validates the name
        elif not isinstance(baseline, Tensor):
            raise TypeError(f"Expected argument `baseline` to be a str or a Tensor, but got {type(baseline).__name__}.")
        self.baseline = baseline

    def check(self, model: nn.Module) -> None:
        """Check that every leaf module of ``model`` is of a type in :data:`DEEPLIFT_LAYERS`.

        Raises:
            ValueError: an unsupported layer; the message names it and the method.
        """
        for name, module in model.named_modules():
            is_leaf = next(iter(module.children()), None) is None
            if is_leaf and not isinstance(module, DEEPLIFT_LAYERS):
                raise ValueError(
                    f"{type(self).__name__}: layer {name or '(the model)'!r} ({type(module).__name__}) is not supported "
                    "by the Rescale rule. Supported layers: Conv1d/2d/3d, Linear, BatchNorm, ReLU (in place too), "
                    "Sigmoid, Tanh, MaxPool, AvgPool, AdaptiveAvgPool, Flatten, Dropout, Identity and residual "
                    "additions."
                )

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        method = type(self).__name__
        reference = make_baseline(self.baseline, inputs.detach())
        recorder = _DeepLiftMode(method, None)
        with torch.no_grad(), recorder:
            model(reference)
        mode = _DeepLiftMode(method, recorder.refs, model)
        with mode:
            outputs = model(inputs)
        scores, _, _ = forward_scores(lambda _: outputs, inputs, target)
        (grad,) = torch.autograd.grad(scores.sum(), inputs)
        return (inputs.detach() - reference) * grad
