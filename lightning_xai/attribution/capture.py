"""Recording a layer's output during a forward pass: the hook every layer method uses.

:class:`LayerCapture` records a layer's true output (or, for a name ending in ``":input"``, the
module's first input) and hands the rest of the network a clone, so in-place operations after the
layer (``ReLU(inplace=True)``, ``out += identity``) do not change the recorded value.
:func:`capture_layer` registers one through an explainer's context, which removes it on every exit
path; :func:`layer_activation_and_gradient` is the one forward and backward pass the gradient CAMs
share.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    ExplainContext,
    TargetType,
    forward_scores,
    get_layer,
)
from lightning_xai.errors import LightningXAIError

__all__ = ["INPUT_SUFFIX", "LayerCapture", "capture_layer", "layer_activation_and_gradient"]

INPUT_SUFFIX = ":input"
"""A layer name ending in this suffix names the module's first input rather than its output."""


class LayerCapture:
    """Forward hook recording a layer's output; the rest of the network receives a clone.

    For a name ending in ``":input"`` (``"avgpool:input"``) it is a forward pre-hook recording
    the module's first input instead (the tensor itself, a node of the autograd graph).

    Handing downstream modules a clone keeps the recorded tensor equal to the layer's true output
    when a following operation works in place (``ReLU(inplace=True)``, ``out += identity``), and
    keeps it a node of the autograd graph whose gradient is the gradient w.r.t. that output.
    Register it with :func:`capture_layer`.

    Attributes:
        name: The layer's dotted name.
        outputs: The layer's output of every call during the forward passes so far.
    """

    def __init__(self, name: str, method: str = "explainer", *, clone: bool = True) -> None:
        self.name = name
        self.method = method
        self.clone = clone
        self.outputs: list[Tensor] = []
        self._handle: Any = None

    def __call__(self, module: nn.Module, args: Any, output: Any = None) -> Any:
        if self.name.endswith(INPUT_SUFFIX):  # a forward pre-hook: the layer's first input
            value = args[0] if args else None
            if not isinstance(value, Tensor):
                raise LightningXAIError(
                    f"{self.method}: the first input of {self.name[: -len(INPUT_SUFFIX)]!r} is a "
                    f"{type(value).__name__}; a class activation map needs a tensor."
                )
            self.outputs.append(value)
            return None
        if not isinstance(output, Tensor):
            raise LightningXAIError(
                f"{self.method}: layer {self.name!r} returned a {type(output).__name__}; "
                "a class activation map needs a layer that returns a single tensor."
            )
        self.outputs.append(output)
        return output.clone() if self.clone else None

    @property
    def activation(self) -> Tensor:
        """The layer's output of its one call.

        Raises:
            LightningXAIError: the layer ran zero or several times in the forward pass.
        """
        if len(self.outputs) != 1:
            if not self.outputs:
                why = "was not called during the forward pass"
            else:
                why = (
                    f"was called {len(self.outputs)} times in one forward pass (a reused module), so "
                    "its activation is ambiguous; choose a layer that runs once"
                )
            raise LightningXAIError(f"{self.method}: layer {self.name!r} {why}.")
        return self.outputs[0]

    def remove(self) -> None:
        """Remove the hook now (removing it again, e.g. when the context exits, is harmless)."""
        if self._handle is not None:
            self._handle.remove()


def capture_layer(
    ctx: ExplainContext, model: nn.Module, name: str, *, method: str = "explainer", clone: bool = True
) -> LayerCapture:
    """Register a :class:`LayerCapture` on layer ``name`` through ``ctx`` (removed on exit).

    Args:
        ctx: The :class:`~lightning_xai.attribution.base.ExplainContext` of the running explainer.
        model: The model.
        name: Dotted name of the layer; with the suffix ``":input"``, the module's first input.
        method: Method name used in error messages.
        clone: Hand downstream modules a clone of the output (see :class:`LayerCapture`).

    Returns:
        The capture; read :attr:`LayerCapture.activation` after a forward pass.

    Raises:
        ValueError: ``model`` has no layer ``name`` (the message lists the valid names).
    """
    capture = LayerCapture(name, method, clone=clone)
    if name.endswith(INPUT_SUFFIX):
        layer = get_layer(model, name[: -len(INPUT_SUFFIX)], method=method)
        capture._handle = ctx.add_hook(layer.register_forward_pre_hook(capture))
    else:
        layer = get_layer(model, name, method=method)
        capture._handle = ctx.add_hook(layer.register_forward_hook(capture))
    return capture


def layer_activation_and_gradient(
    model: nn.Module,
    inputs: Tensor,
    target: TargetType,
    layer: str,
    ctx: ExplainContext,
    *,
    method: str = "explainer",
) -> tuple[Tensor, Tensor, Tensor]:
    """A layer's output ``A`` and ``dS_c / dA`` with one forward and one backward pass.

    Args:
        model: The model (inside :func:`~lightning_xai.attribution.base.observe`).
        inputs: Inputs that require grad.
        target: The class to explain (``int``, ``[B]`` tensor or ``None`` for the prediction).
        layer: Dotted name of the layer.
        ctx: The running explainer's context.
        method: Method name used in error messages.

    Returns:
        ``(activation, gradient, target)``: the detached ``[B, K, ...]`` layer output (its true
        value, see :class:`LayerCapture`), the gradient of the target scores w.r.t. it, and the
        resolved ``[B]`` target.

    Raises:
        LightningXAIError: the layer ran zero or several times, or does not return a tensor.
    """
    capture = capture_layer(ctx, model, layer, method=method)
    try:
        scores, resolved, _ = forward_scores(model, inputs, target)
    finally:
        capture.remove()
    activation = capture.activation
    (gradient,) = torch.autograd.grad(scores.sum(), activation)
    return activation.detach(), gradient, resolved
