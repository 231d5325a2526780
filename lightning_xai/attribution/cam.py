"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM, Guided Grad-CAM and FullGrad.

Region methods (:class:`CAM`, :class:`GradCAM`, :class:`GradCAMPlusPlus`, :class:`ScoreCAM`,
:class:`FullGrad`) return non-negative ``[B, 1, H, W]`` maps upsampled to the input size;
:class:`GuidedGradCAM` returns an input-shaped, signed map. Every map is returned *raw*: not
min-max normalised per image (renderers normalise for display; :func:`minmax_normalize`
reproduces pytorch-grad-cam's normalisation exactly).

Post-processing is kept apart from the methods, captum-style: :func:`upsample` resizes layer maps
and each layer method also offers ``attribute_layer`` returning the map at the layer's own
resolution.

**The layer's true output.** A layer is explained through its *own* output, even when the model
modifies that output in place afterwards (VGG's ``Conv2d`` followed by ``ReLU(inplace=True)``, a
residual ``out += identity``). The forward hook that records the activation hands the rest of the
network a clone, so the in-place operation runs on the clone and the recorded tensor keeps the
layer's value; its gradient is the gradient w.r.t. that value (the price: one copy of the
layer's output). This is captum's semantics (``LayerGradCam`` clones the layer output in the same
way) and the map is identical to the one computed on the same model with the in-place flags off.
pytorch-grad-cam 1.5.7 on CPU differs on such a layer: its hook keeps ``output.cpu().detach()``,
an alias on CPU, which the in-place ReLU then overwrites, so it weights *post-ReLU* activations by
gradients w.r.t. the *pre-ReLU* output (on GPU ``.cpu()`` copies, giving the true output). It
agrees with this module when the in-place flag is off, and when the ReLU module itself is the
explained layer.

**The default layer.** Every layer method (:class:`CAM`, :class:`GradCAM`,
:class:`GradCAMPlusPlus`, :class:`ScoreCAM`, :class:`GuidedGradCAM`) explains by default the
feature map the global pool consumes: the input of the last ``nn.AdaptiveAvgPool2d(1)`` after the
last convolution (``layer4``'s activated output on a ResNet, not ``layer4.1.conv2`` inside its
residual branch), captured by a forward pre-hook on the pool; :func:`default_cam_layer` names the
module that produces it. Without a global pooling module (VGG's 7 x 7 pool, densenet's functional
pool) the default is the last conv block's activated output (:func:`activated_last_conv`).
``layer="last_conv"`` keeps the last ``nn.Conv2d``. A layer with a 1 x 1 output (a global pool)
is refused, as its map would be constant.

A layer must run exactly once per forward pass: a reused module (one ``nn.ReLU`` applied after
every block) has no single activation, and asking for it raises
:class:`~lightning_xai.errors.LightningXAIError`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import (
    DEFAULT_CHUNK_ELEMENTS,
    ExplainContext,
    Explainer,
    OutputType,
    TargetType,
    accumulation_dtype,
    default_chunk_rows,
    forward_scores,
    get_layer,
    last_conv_layer_name,
    observe,
    resolve_target,
    run_chunked,
    select_scores,
)
from lightning_xai.attribution.gradient import GuidedBackprop
from lightning_xai.errors import LightningXAIError

__all__ = [
    "LAST_CONV",
    "CAM",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "LayerCapture",
    "ScoreCAM",
    "activated_last_conv",
    "capture_layer",
    "default_cam_layer",
    "forward_chunk_rows",
    "global_pool_name",
    "pooled_layer",
    "layer_activation_and_gradient",
    "minmax_normalize",
    "upsample",
]

_INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")

LAST_CONV = "last_conv"
"""``layer=LAST_CONV`` explains the last ``nn.Conv2d`` (in ``named_modules`` order): the CAM
family's default before it moved to the feature map the global pool consumes."""

_INPUT_SUFFIX = ":input"
_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.PReLU,
    nn.Hardtanh,
)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


# --------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------
def upsample(maps: Tensor, size: tuple[int, int] | torch.Size, mode: str = "bilinear") -> Tensor:
    """Resize ``[B, C, h, w]`` maps to ``size = (H, W)``.

    ``"bilinear"`` and ``"bicubic"`` use ``align_corners=False`` (half-pixel centres), the
    convention of ``cv2.resize`` (pytorch-grad-cam) and ``torch.nn.functional.interpolate``
    (captum's ``LayerAttribution.interpolate``): for float maps the two agree to float32
    rounding. Maps already of size ``size`` are returned unchanged.

    Args:
        maps: A ``[B, C, h, w]`` tensor.
        size: The target ``(H, W)``.
        mode: One of ``"nearest"``, ``"nearest-exact"``, ``"bilinear"``, ``"bicubic"``, ``"area"``.

    Returns:
        A ``[B, C, H, W]`` tensor of ``maps``' dtype and device.

    Raises:
        ValueError: ``maps`` is not 4-D or ``mode`` is unknown.

    Example:
        >>> upsample(torch.ones(2, 1, 7, 7), (28, 28)).shape
        torch.Size([2, 1, 28, 28])
    """
    _check_mode(mode)
    if maps.ndim != 4:
        raise ValueError(f"Expected `maps` of shape [B, C, h, w], but got shape {tuple(maps.shape)}.")
    size = (int(size[0]), int(size[1]))
    if tuple(maps.shape[-2:]) == size:
        return maps
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(maps, size=size, mode=mode, align_corners=align)


def minmax_normalize(maps: Tensor, eps: float = 1e-7) -> Tensor:
    """Min-max normalise each ``[h, w]`` map to ``[0, 1]``: ``(m - min) / (max(m - min) + eps)``.

    This is pytorch-grad-cam's ``scale_cam_image`` (without its resize and float32 cast),
    applied independently to every ``(b, c)`` map.

    Args:
        maps: A ``[B, C, h, w]`` (or ``[..., h, w]``) tensor.
        eps: Added to the range so constant maps become zero instead of NaN.

    Returns:
        A tensor of ``maps``' shape.

    Example:
        >>> minmax_normalize(torch.tensor([[[[1.0, 2.0, 3.0]]]]), eps=0.0).flatten().tolist()
        [0.0, 0.5, 1.0]
    """
    low = maps.amin(dim=(-2, -1), keepdim=True)
    shifted = maps - low
    return shifted / (shifted.amax(dim=(-2, -1), keepdim=True) + eps)


def _check_mode(mode: str) -> None:
    if mode not in _INTERPOLATE_MODES:
        raise ValueError(
            f"Expected argument `interpolate_mode` to be one of {', '.join(map(repr, _INTERPOLATE_MODES))}, "
            f"but got {mode!r}."
        )


def _check_name(argument: str, name: object) -> None:
    if name is None:
        return
    if not isinstance(name, str):
        raise TypeError(f"Expected argument `{argument}` to be a dotted module name or None, but got {name!r}.")
    if not name:
        raise ValueError(f"Expected argument `{argument}` to be a non-empty dotted module name or None, but got ''.")


# --------------------------------------------------------------------------------------------
# capturing a layer's output
# --------------------------------------------------------------------------------------------
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
        if self.name.endswith(_INPUT_SUFFIX):  # a forward pre-hook: the layer's first input
            value = args[0] if args else None
            if not isinstance(value, Tensor):
                raise LightningXAIError(
                    f"{self.method}: the first input of {self.name[: -len(_INPUT_SUFFIX)]!r} is a "
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
    if name.endswith(_INPUT_SUFFIX):
        layer = get_layer(model, name[: -len(_INPUT_SUFFIX)], method=method)
        capture._handle = ctx.add_hook(layer.register_forward_pre_hook(capture))
    else:
        layer = get_layer(model, name, method=method)
        capture._handle = ctx.add_hook(layer.register_forward_hook(capture))
    return capture


# --------------------------------------------------------------------------------------------
# the default layer: the feature map the global pool consumes
# --------------------------------------------------------------------------------------------
def _modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n]


def _is_global_pool(module: nn.Module) -> bool:
    return isinstance(module, _GLOBAL_POOLS) and _is_global(module.output_size)


def global_pool_name(model: nn.Module) -> str | None:
    """The last global pooling module (``nn.AdaptiveAvgPool2d(1)``, or max) registered after the
    last ``nn.Conv2d``: the pool in front of the head. ``None`` when there is none (a functional
    pool such as densenet's ``F.adaptive_avg_pool2d``, or a non-global pool such as VGG's 7 x 7);
    squeeze-and-excitation pools inside the blocks come before the last conv and are skipped.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> global_pool_name(model)
        '2'
    """
    modules = _modules(model)
    last_conv = max((i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Conv2d)), default=-1)
    pools = [n for i, (n, m) in enumerate(modules) if i > last_conv and _is_global_pool(m)]
    return pools[-1] if pools else None


def activated_last_conv(model: nn.Module, *, method: str = "explainer") -> str:
    """The last conv block's activated output: the first activation module (ReLU, SiLU, GELU,
    Hardswish, ...) registered after the last ``nn.Conv2d`` and before any ``nn.Linear``,
    ``nn.Flatten`` or pooling; without one, the top-level child of ``model`` that holds the last
    ``nn.Conv2d`` (the conv itself when it is a direct child).

    Raises:
        ValueError: the model has no ``nn.Conv2d``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2))
        >>> activated_last_conv(model)
        '1'
    """
    conv = last_conv_layer_name(model, method=method)
    modules = _modules(model)
    index = [n for n, _ in modules].index(conv)
    for name, module in modules[index + 1 :]:
        if name.startswith(conv + "."):
            continue
        if isinstance(module, (nn.Linear, nn.Flatten, nn.modules.pooling._AdaptiveAvgPoolNd)) or _is_global_pool(
            module
        ):
            break
        if isinstance(module, _ACTIVATIONS):
            return name
    return conv.split(".")[0]


def pooled_layer(model: nn.Module, *, method: str = "explainer") -> str:
    """The CAM family's default layer, found structurally: ``"<pool>:input"`` (the feature map
    the global pool consumes, :func:`global_pool_name`), else :func:`activated_last_conv`.

    Raises:
        ValueError: no global pool and no ``nn.Conv2d``.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> pooled_layer(model)
        '2:input'
    """
    pool = global_pool_name(model)
    if pool is not None:
        return pool + _INPUT_SUFFIX
    return activated_last_conv(model, method=method)


def default_cam_layer(model: nn.Module, inputs: Tensor, *, output: OutputType = None, method: str = "explainer") -> str:
    """The name of the module whose output is the CAM family's default feature map.

    One hooked forward pass of ``inputs`` (under :func:`~lightning_xai.attribution.base.observe`,
    no gradients) finds the module that produced the tensor the global pool consumes: the last
    module to return that very tensor, unmodified since (``layer4`` on a torchvision ResNet,
    ``features`` on EfficientNet); a module called several times per forward pass does not count.
    Falls back to the structural :func:`pooled_layer` spec when no
    module produced it (a functional operation in between) and to :func:`activated_last_conv`
    without a global pool.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> default_cam_layer(model, torch.rand(1, 3, 8, 8))
        '1'
    """
    spec = pooled_layer(model, method=method)
    if not spec.endswith(_INPUT_SUFFIX):
        return spec
    pool = model.get_submodule(spec[: -len(_INPUT_SUFFIX)])
    produced: list[tuple[str, Tensor, int]] = []
    consumed: list[tuple[Tensor, int]] = []

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, Tensor):
                produced.append((name, out, out._version))

        return hook

    def record_input(module: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], Tensor):
            consumed.append((args[0], args[0]._version))

    with observe(model, output=output) as ctx:
        for name, module in _modules(model):
            if module is not pool:
                ctx.add_hook(module.register_forward_hook(recorder(name)))
        ctx.add_hook(pool.register_forward_pre_hook(record_input))
        with torch.no_grad():
            model(ctx.prepare(inputs).detach())
    if len(consumed) != 1:
        return spec
    tensor, version = consumed[0]
    calls: dict[str, int] = {}
    for name, _, _ in produced:
        calls[name] = calls.get(name, 0) + 1
    for name, out, out_version in reversed(produced):
        if out is tensor and out_version == version and calls[name] == 1:  # a reused module is no answer
            return name
    return spec


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


def _spatial(activation: Tensor, method: str, layer: str) -> Tensor:
    if activation.ndim != 4:
        raise LightningXAIError(
            f"{method}: layer {layer!r} returned shape {tuple(activation.shape)}; a class activation map "
            "needs a [B, C, H, W] feature map (a convolutional layer or block)."
        )
    if activation.shape[-2:] == (1, 1):
        warnings.warn(
            f"{method}: layer {layer!r} has a 1 x 1 output, so the map is constant over the image; explain "
            "a layer with a spatial feature map (leave `layer` unset for the one the global pool consumes).",
            RuntimeWarning,
            stacklevel=2,
        )
    return activation


def _weighted_sum(weights: Tensor, activation: Tensor) -> Tensor:
    """``ReLU(sum_k w_k A_k)`` as a ``[B, 1, h, w]`` map, accumulated in float32 (or float64)."""
    acc = accumulation_dtype(activation.dtype)
    return (weights.to(acc)[:, :, None, None] * activation.to(acc)).sum(dim=1, keepdim=True).clamp_min(0)


def forward_chunk_rows(inputs: Tensor) -> int:
    """Default rows per no-grad forward chunk (Score-CAM's masked inputs), sized from the device.

    On CUDA: a quarter of the free device memory (``torch.cuda.mem_get_info``) divided by 32 times
    one input's bytes (a forward pass without autograd keeps a few activations alive at a time;
    resnet50 at 224 x 224 needs about 20 times its input), between 32 and 1024 rows. Elsewhere
    (CPU): :data:`~lightning_xai.attribution.base.DEFAULT_CHUNK_ELEMENTS` input elements (27
    images at 3 x 224 x 224), at most 1024 rows.

    Example:
        >>> forward_chunk_rows(torch.zeros(2, 3, 224, 224))
        27
    """
    row_bytes = max(1, inputs[0].numel() * inputs.element_size())
    if inputs.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(inputs.device)
        return int(min(1024, max(32, (free // 4) // (32 * row_bytes))))
    return min(1024, default_chunk_rows(inputs, DEFAULT_CHUNK_ELEMENTS))


# --------------------------------------------------------------------------------------------
# the layer-map family
# --------------------------------------------------------------------------------------------
class _LayerCAMBase(Explainer):
    """Shared configuration of the maps computed at one layer and upsampled to the input."""

    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False
    _checks_while_attributing: ClassVar[bool] = True  # _layer_map resolves the layer (and CAM its head)

    def __init__(self, layer: str | None = None, *, interpolate_mode: str = "bilinear") -> None:
        _check_name("layer", layer)
        _check_mode(interpolate_mode)
        self.layer = layer
        self.interpolate_mode = interpolate_mode

    @property
    def _method(self) -> str:
        return type(self).__name__

    def layer_name(self, model: nn.Module) -> str:
        """The explained layer, resolved structurally (no forward pass).

        ``layer`` itself when given; :data:`LAST_CONV` gives the last ``nn.Conv2d``; ``None`` gives
        :func:`pooled_layer`: ``"<pool>:input"``, the feature map the global pool consumes (call
        :func:`default_cam_layer` with inputs for the module that produces it), or the last conv
        block's activated output when there is no global pooling module.

        Raises:
            ValueError: ``layer`` is not a sub-module of ``model`` (the message lists the valid
                names), is a global pooling module (a 1 x 1 output gives a constant map), or no
                default exists (no ``nn.Conv2d``).
        """
        method = self._method
        if self.layer is None:
            return pooled_layer(model, method=method)
        if self.layer == LAST_CONV:
            return last_conv_layer_name(model, method=method)
        name = self.layer[: -len(_INPUT_SUFFIX)] if self.layer.endswith(_INPUT_SUFFIX) else self.layer
        module = get_layer(model, name, method=method)
        if name == self.layer and (_is_global_pool(module) or isinstance(module, (nn.Flatten, nn.Linear))):
            raise ValueError(
                f"{method}: layer {name!r} ({type(module).__name__}) has no spatial output (1 x 1 at most), so its "
                f"map would be constant over the image. Explain the feature map it consumes (`layer={name + _INPUT_SUFFIX!r}`"
                ", the default when it is the global pool) or a convolutional block."
            )
        return self.layer

    def check(self, model: nn.Module) -> None:
        """Validate ``layer`` against ``model``.

        Raises:
            ValueError: unknown layer name (the message lists the valid names), a layer without a
                spatial output, or, with the default layer, a model without a global pool or
                ``nn.Conv2d``.
        """
        self.layer_name(model)

    def attribute_layer(
        self, model: nn.Module, inputs: Tensor, target: TargetType = None, *, output: OutputType = None
    ) -> Tensor:
        """The map at the layer's own resolution, ``[B, 1, h, w]``, before :func:`upsample`.

        Same arguments, checks and cost as calling the explainer.
        """
        return self._run(model, inputs, lambda x, ctx: self._layer_map(model, x, target, ctx)[0], output=output)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        maps, _ = self._layer_map(model, inputs, target, ctx)
        return upsample(maps, inputs.shape[-2:], self.interpolate_mode)

    def _layer_map(
        self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext
    ) -> tuple[Tensor, Tensor]:
        """``([B, 1, h, w] map, resolved [B] target)``."""
        raise NotImplementedError

    def _where(self) -> str:
        return f" at layer {self.layer!r}" if self.layer else " at the default layer (the global pool's input)"


class GradCAM(_LayerCAMBase):
    """Grad-CAM (Selvaraju et al., 2016): ``ReLU(sum_k mean_ij(dS_c/dA_k) A_k)``, upsampled.

    ``A`` is the output of ``layer`` (its true output even when an in-place ReLU follows: see the
    module docstring) and ``S_c`` the target class score (logit). Equals captum's
    ``LayerGradCam(relu_attributions=True)`` followed by
    ``LayerAttribution.interpolate(..., "bilinear")`` and, before
    normalisation, pytorch-grad-cam's ``GradCAM``, which additionally min-max normalises each map
    (twice: per layer and after aggregating layers) and returns float32 numpy:
    ``minmax_normalize(minmax_normalize(x))`` of this map reproduces it.

    Cost: 1 forward and 1 backward pass.

    Args:
        layer: The layer to explain: a dotted module name (``model.get_submodule``), a name with
            the suffix ``":input"`` for a module's input (``"avgpool:input"``), ``"last_conv"``
            (:data:`LAST_CONV`) for the last ``nn.Conv2d``, or ``None`` (default) for the feature
            map the global pool consumes (:func:`pooled_layer`: ``layer4``'s output on a ResNet),
            or the last conv block's activated output when the model has no global pooling module.
        interpolate_mode: How the layer map is resized to the input (see :func:`upsample`).

    Raises:
        TypeError: ``layer`` is not a string or None.
        ValueError: ``layer`` is empty or ``interpolate_mode`` is unknown; when called or checked, ``layer`` is not a
            layer of the model (the message lists the valid names) or has no spatial output.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4))
        >>> images = torch.rand(2, 3, 16, 16)
        >>> GradCAM()(model, images, target=3).shape  # the input of the pool: the ReLU's output
        torch.Size([2, 1, 16, 16])
        >>> GradCAM(layer="last_conv").attribute_layer(model, images, 3).shape  # before upsampling
        torch.Size([2, 1, 16, 16])
    """

    def _weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        return gradient.to(accumulation_dtype(gradient.dtype)).mean(dim=(2, 3))

    def _layer_map(
        self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext
    ) -> tuple[Tensor, Tensor]:
        name = self.layer_name(model)
        activation, gradient, resolved = layer_activation_and_gradient(
            model, inputs, target, name, ctx, method=self._method
        )
        activation = _spatial(activation, self._method, name)
        return _weighted_sum(self._weights(activation, gradient), activation), resolved


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++ (Chattopadhyay et al., 2018) with pytorch-grad-cam's closed-form weights.

    With ``g = dS_c/dA`` (``S_c`` the logit: the paper's third-order terms of ``exp(S_c)``
    reduce to powers of ``g``)::

        alpha_kij = g^2 / (2 g^2 + sum_ab(A_kab) g^3 + 1e-6), and 0 where g == 0
        w_k = sum_ij alpha_kij ReLU(g_kij)
        map = ReLU(sum_k w_k A_k)

    exactly as pytorch-grad-cam 1.5.7 (``eps = 1e-6``), before its per-image normalisation.

    Cost: 1 forward and 1 backward pass.

    Args:
        layer: The layer to explain: a dotted module name (``model.get_submodule``), a name with
            the suffix ``":input"`` for a module's input (``"avgpool:input"``), ``"last_conv"``
            (:data:`LAST_CONV`) for the last ``nn.Conv2d``, or ``None`` (default) for the feature
            map the global pool consumes (:func:`pooled_layer`: ``layer4``'s output on a ResNet),
            or the last conv block's activated output when the model has no global pooling module.
        interpolate_mode: How the layer map is resized to the input (see :func:`upsample`).

    Raises:
        TypeError: ``layer`` is not a string or None.
        ValueError: ``interpolate_mode`` is unknown or, when called, ``layer`` is not a layer
            of the model.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4))
        >>> images = torch.rand(2, 3, 16, 16)
        >>> GradCAMPlusPlus()(model, images).shape  # explains the predicted classes
        torch.Size([2, 1, 16, 16])
    """

    def _weights(self, activation: Tensor, gradient: Tensor) -> Tensor:
        acc = accumulation_dtype(gradient.dtype)
        gradient, activation = gradient.to(acc), activation.to(acc)
        grad2 = gradient.pow(2)
        grad3 = grad2 * gradient
        total = activation.sum(dim=(2, 3), keepdim=True)
        alpha = grad2 / (2 * grad2 + total * grad3 + 1e-6)
        alpha = torch.where(gradient != 0, alpha, torch.zeros_like(alpha))
        return (gradient.clamp_min(0) * alpha).sum(dim=(2, 3))


class ScoreCAM(_LayerCAMBase):
    """Score-CAM (Wang et al., 2020), as pytorch-grad-cam 1.5.7 defines it. No gradients.

    Each channel ``A_k`` of the layer output is upsampled to the input size (bilinear with
    ``align_corners=True``, like pytorch-grad-cam's ``UpsamplingBilinear2d``), min-max normalised
    to ``[0, 1]`` (``(u - min) / (max - min + 1e-8)``) and multiplies the input; ``s_k`` is the
    target logit of that masked input, ``w = softmax_k(s)`` and the map is
    ``ReLU(sum_k w_k A_k)``, upsampled bilinearly.

    Differences from the paper: the paper weights channel ``k`` by its *increase of confidence*
    ``f(X * H_k) - f(X_b)`` on the class probability (softmax over classes) against a baseline
    input; pytorch-grad-cam and this class use the raw target logit of the masked input, no
    baseline term, and a softmax over channels.

    Cost: ``1 + K`` forward passes per input (``K`` channels of the layer), run in batches of
    ``internal_batch_size`` masked inputs under ``torch.no_grad``; no backward pass.

    Args:
        layer: The layer to explain: a dotted module name (``model.get_submodule``), a name with
            the suffix ``":input"`` for a module's input (``"avgpool:input"``), ``"last_conv"``
            (:data:`LAST_CONV`) for the last ``nn.Conv2d``, or ``None`` (default) for the feature
            map the global pool consumes (:func:`pooled_layer`: ``layer4``'s output on a ResNet),
            or the last conv block's activated output when the model has no global pooling module.
        internal_batch_size: Masked inputs per forward pass (the ``B * K`` of a batch are
            chunked); ``None`` (default) sizes it from the device (:func:`forward_chunk_rows`:
            from the free memory on CUDA, ``2**22`` input elements on the CPU) and halves it, with
            a warning, on out-of-memory. A value you pass is used as is.
        interpolate_mode: How the final layer map is resized to the input (see :func:`upsample`).

    Raises:
        TypeError: ``layer`` is not a string or None.
        ValueError: ``internal_batch_size`` is not a positive int, ``interpolate_mode`` is
            unknown or, when called, ``layer`` is not a layer of the model.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4))
        >>> images = torch.rand(2, 3, 16, 16)
        >>> ScoreCAM(internal_batch_size=64)(model, images, target=1).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self, layer: str | None = None, internal_batch_size: int | None = None, *, interpolate_mode: str = "bilinear"
    ) -> None:
        super().__init__(layer, interpolate_mode=interpolate_mode)
        self.internal_batch_size = check_int("internal_batch_size", internal_batch_size, 1, allow_none=True)

    def _layer_map(
        self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext
    ) -> tuple[Tensor, Tensor]:
        name = self.layer_name(model)
        x = inputs.detach()
        with torch.no_grad():
            capture = capture_layer(ctx, model, name, method=self._method)
            try:
                outputs = model(x)
            finally:
                capture.remove()
            resolved = resolve_target(target, outputs)  # the one check of the targets' range
            activation = _spatial(capture.activation, self._method, name)
            batch, channels = activation.shape[:2]
            flat = activation.reshape(batch * channels, 1, *activation.shape[2:])
            scores = torch.empty(batch * channels, dtype=accumulation_dtype(outputs.dtype), device=x.device)
            size = tuple(x.shape[-2:])

            def body(part: slice) -> None:
                sample = torch.arange(part.start, part.stop, device=x.device) // channels
                masks = F.interpolate(flat[part], size=size, mode="bilinear", align_corners=True)
                low = masks.amin(dim=(2, 3), keepdim=True)
                high = masks.amax(dim=(2, 3), keepdim=True)
                masks = (masks - low) / (high - low + 1e-8)
                scores[part] = select_scores(model(x[sample] * masks.to(x.dtype)), resolved[sample])

            run_chunked(
                batch * channels,
                self.internal_batch_size or forward_chunk_rows(x),
                body,
                method=self._method,
                adaptive=self.internal_batch_size is None,
            )
            weights = torch.softmax(scores.view(batch, channels), dim=1)
            return _weighted_sum(weights, activation), resolved


class CAM(_LayerCAMBase):
    """Class activation mapping (Zhou et al., 2016): ``ReLU(sum_k w_ck A_k)``, upsampled.

    Needs a model whose classifier is ``features -> global average pooling -> nn.Linear``:
    ``A`` are the pooled features and ``w_c = fc.weight[c]``. On such a model the map is exactly
    ``h * w`` times :class:`GradCAM`'s map at the same layer (``dS_c/dA_kij = w_ck / (h w)``).
    The ReLU, as in Grad-CAM, keeps positive evidence (the paper displays the raw, normalised
    sum).

    The head is found structurally when checked: ``fc`` (default: the last ``nn.Linear``) must be
    preceded by a global-average-pooling module (``nn.AdaptiveAvgPool2d`` with output size 1)
    with no parametrised layer in between (``nn.Flatten``/``nn.Dropout`` are fine). When called,
    one hooked forward verifies numerically that the input of ``fc`` is the spatial mean of
    ``A``. A functional pooling (``x.mean((2, 3))``) is not detected: wrap it in
    ``nn.AdaptiveAvgPool2d(1)`` or use :class:`GradCAM`.

    Cost: 1 forward pass, no backward pass.

    Args:
        layer: Dotted name of the layer whose output is pooled; ``None`` (default) uses the
            input of the global-average-pooling module itself.
        fc: Dotted name of the final ``nn.Linear``; ``None`` (default) picks the last one.
        interpolate_mode: How the layer map is resized to the input (see :func:`upsample`).

    Raises:
        TypeError: ``layer`` or ``fc`` is not a string or None.
        ValueError: ``interpolate_mode`` is unknown; when checked or called, an unknown layer
            name, or a model without a GAP + linear head (the message says why and suggests
            :class:`GradCAM`).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4))
        >>> CAM()(model, torch.rand(2, 3, 16, 16), target=0).shape  # features -> pool -> linear
        torch.Size([2, 1, 16, 16])
    """

    def __init__(self, layer: str | None = None, fc: str | None = None, *, interpolate_mode: str = "bilinear") -> None:
        super().__init__(layer, interpolate_mode=interpolate_mode)
        _check_name("fc", fc)
        self.fc = fc

    def _where(self) -> str:
        return f" at layer {self.layer!r}" if self.layer else " at the input of the global average pooling"

    def _head(self, model: nn.Module) -> tuple[str, nn.Linear, str]:
        """``(fc name, fc module, GAP name)``, validated structurally."""
        method = self._method
        modules = [(n, m) for n, m in model.named_modules() if n]
        if self.fc is not None:
            fc = get_layer(model, self.fc, method=method)
            if not isinstance(fc, nn.Linear):
                raise ValueError(
                    f"{method}: `fc` must name an nn.Linear classifier, but {self.fc!r} is a {type(fc).__name__}."
                )
            fc_name = self.fc
        else:
            linears = [(n, m) for n, m in modules if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError(
                    f"{method}: the model has no nn.Linear classifier, so class activation maps are undefined; "
                    "CAM needs features -> global average pooling -> nn.Linear. Use GradCAM, which works on any "
                    "convolutional model."
                )
            fc_name, fc = linears[-1]
        order = [n for n, _ in modules]
        fc_index = order.index(fc_name)
        pools = [
            (i, n, m)
            for i, (n, m) in enumerate(modules[:fc_index])
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveAvgPool1d))
        ]
        global_pools = [(i, n) for i, n, m in pools if _is_global(m.output_size)]
        if not global_pools:
            found = f" (found {', '.join(f'{n!r} = {m}' for _, n, m in pools)}, not global)" if pools else ""
            raise ValueError(
                f"{method}: the model has no global-average-pooling layer (nn.AdaptiveAvgPool2d(1)) before its "
                f"classifier {fc_name!r}{found}, so class activation maps are undefined. CAM needs features -> "
                "global average pooling -> nn.Linear; use GradCAM, which works on any convolutional model."
            )
        gap_index, gap_name = global_pools[-1]
        between = [
            n
            for n, m in modules[gap_index + 1 : fc_index]
            if any(True for _ in m.parameters(recurse=False)) and not n.startswith(fc_name + ".")
        ]
        if between:
            raise ValueError(
                f"{method}: layers with parameters ({', '.join(map(repr, between))}) sit between the global "
                f"average pooling {gap_name!r} and the classifier {fc_name!r}, so the class weights do not act on "
                "the pooled features and CAM is undefined; use GradCAM."
            )
        return fc_name, fc, gap_name

    def check(self, model: nn.Module) -> None:
        """Validate ``layer``, ``fc`` and the GAP + linear head against ``model``.

        Raises:
            ValueError: unknown layer names (the message lists the valid ones), or no
                global-average-pooling + linear head (the message says why).
        """
        self._head(model)
        if self.layer is not None:
            _LayerCAMBase.layer_name(self, model)

    def layer_name(self, model: nn.Module) -> str:
        """``layer`` (resolved as in :meth:`GradCAM.layer_name`), or by default ``"<gap>:input"``:
        the input of the global average pooling in front of ``fc``.

        Raises:
            ValueError: unknown layer names, or no global-average-pooling + linear head.
        """
        if self.layer is None:
            return self._head(model)[2] + _INPUT_SUFFIX
        return _LayerCAMBase.layer_name(self, model)

    def _layer_map(
        self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext
    ) -> tuple[Tensor, Tensor]:
        fc_name, fc, gap_name = self._head(model)
        head_inputs: list[Tensor] = []

        def record_input(module: nn.Module, args: tuple[Any, ...]) -> None:
            head_inputs.append(args[0].detach() if args and isinstance(args[0], Tensor) else args)

        ctx.add_hook(fc.register_forward_pre_hook(record_input))
        if self.layer is None:
            name = gap_name
            pooled: list[Tensor] = []

            def record_pooled(module: nn.Module, args: tuple[Any, ...]) -> None:
                pooled.append(args[0].detach().clone() if args and isinstance(args[0], Tensor) else args)

            ctx.add_hook(get_layer(model, gap_name).register_forward_pre_hook(record_pooled))
            with torch.no_grad():
                outputs = model(inputs.detach())
            if len(pooled) != 1:
                raise LightningXAIError(
                    f"{self._method}: the global average pooling {gap_name!r} ran {len(pooled)} times in one forward "
                    "pass; pass `layer=` with the layer whose output it pools."
                )
            activation = pooled[0]
            where = f"the input of the global average pooling {gap_name!r}"
        else:
            name = _LayerCAMBase.layer_name(self, model)
            capture = capture_layer(ctx, model, name, method=self._method)
            with torch.no_grad():
                outputs = model(inputs.detach())
            activation = capture.activation
            where = f"layer {name!r}"
        activation = _spatial(activation, self._method, name)
        resolved = resolve_target(target, outputs)
        if len(head_inputs) != 1 or not isinstance(head_inputs[0], Tensor):
            raise LightningXAIError(f"{self._method}: the classifier {fc_name!r} ran {len(head_inputs)} times.")
        acc = accumulation_dtype(activation.dtype)
        features = head_inputs[0].to(acc)
        means = activation.to(acc).mean(dim=(2, 3))
        scale = float(means.abs().max()) if means.numel() else 0.0
        tol = 1e-2 if activation.dtype != acc else 1e-4  # bf16/fp16 models pool in their own dtype
        if features.shape != means.shape or not torch.allclose(features, means, rtol=tol, atol=tol * scale):
            raise ValueError(
                f"{self._method}: the input of the classifier {fc_name!r} (shape {tuple(features.shape)}) is not the "
                f"global average of {where} (shape {tuple(activation.shape)}), so class activation maps are undefined "
                "for this layer; choose the layer whose output is pooled, or use GradCAM."
            )
        weights = fc.weight[resolved]
        return _weighted_sum(weights, activation), resolved


def _is_global(output_size: Any) -> bool:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    return all(s == 1 for s in sizes)


class GuidedGradCAM(Explainer):
    """Guided Grad-CAM (Selvaraju et al., 2016): guided backprop times the upsampled Grad-CAM.

    ``GuidedBackprop()(model, x, c) * upsample(GradCAM(layer).attribute_layer(model, x, c))``,
    with nearest-neighbour upsampling by default: captum's ``GuidedGradCam`` semantics. Unlike
    the region methods it returns an input-shaped, signed map.

    Cost: 2 forward and 2 backward passes (Grad-CAM, then guided backprop).

    Args:
        layer: The Grad-CAM layer, as for :class:`GradCAM` (default: the feature map the global
            pool consumes; ``"last_conv"`` for the last ``nn.Conv2d``).
        interpolate_mode: How the Grad-CAM map is resized to the input (captum's default
            ``"nearest"``).

    Raises:
        TypeError: ``layer`` is not a string or None.
        ValueError: ``interpolate_mode`` is unknown or, when called, ``layer`` is not a layer
            of the model.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten(), nn.Linear(8, 4))
        >>> GuidedGradCAM()(model, torch.rand(2, 3, 16, 16), target=2).shape  # the images' shape
        torch.Size([2, 3, 16, 16])
    """

    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True
    _checks_while_attributing: ClassVar[bool] = True  # the Grad-CAM _layer_map resolves the layer

    def __init__(self, layer: str | None = None, *, interpolate_mode: str = "nearest") -> None:
        self._grad_cam = GradCAM(layer, interpolate_mode=interpolate_mode)
        self.layer = layer
        self.interpolate_mode = interpolate_mode

    def check(self, model: nn.Module) -> None:
        """Validate ``layer`` against ``model`` (see :meth:`GradCAM.check`)."""
        self._grad_cam.check(model)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        maps, resolved = self._grad_cam._layer_map(model, inputs, target, ctx)
        guided = GuidedBackprop()._attribute(model, ctx.prepare(inputs), resolved, ctx)  # same observe block
        return guided.to(maps.dtype) * upsample(maps, inputs.shape[-2:], self.interpolate_mode)

    def layer_name(self, model: nn.Module) -> str:
        """The Grad-CAM layer (see :meth:`GradCAM.layer_name`)."""
        return self._grad_cam.layer_name(model)

    def _where(self) -> str:
        return self._grad_cam._where()


class FullGrad(Explainer):
    """FullGrad (Srinivas & Fleuret, 2019), as pytorch-grad-cam 1.5.7 defines it.

    With ``psi(m) = upsample(minmax(|m|))`` applied to every ``[h, w]`` map separately and
    summed over channels::

        map = psi(x * dS_c/dx) + sum_layers psi(b * dS_c/dz)

    over every ``nn.Conv2d`` with a bias and every BatchNorm on ``[B, C, H, W]`` features, where
    ``z`` is the layer's (true) output and ``b`` its bias; a BatchNorm's bias is its eval-mode
    effective bias ``beta - mu * gamma / sqrt(var + eps)``. ``minmax`` is
    :func:`minmax_normalize` (``eps = 1e-7``) and ``upsample`` is bilinear. A module called
    several times contributes once per call. Only spatial bias layers count: ``nn.Linear``
    layers (the head) are left out, as in pytorch-grad-cam.

    pytorch-grad-cam additionally min-max normalises the summed map of each image at the end and
    returns float32 numpy: ``minmax_normalize(FullGrad()(model, x, c))`` reproduces it.

    Cost: 1 forward and 1 backward pass (gradients w.r.t. the input and every bias layer's
    output at once).

    Args:
        interpolate_mode: How each layer's map is resized to the input (see :func:`upsample`).

    Raises:
        ValueError: ``interpolate_mode`` is unknown.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
        >>> FullGrad()(model, torch.rand(2, 3, 16, 16), target=1).shape
        torch.Size([2, 1, 16, 16])
    """

    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False

    def __init__(self, *, interpolate_mode: str = "bilinear") -> None:
        _check_mode(interpolate_mode)
        self.interpolate_mode = interpolate_mode

    @staticmethod
    def bias_layers(model: nn.Module) -> list[str]:
        """Dotted names of the layers whose bias-gradients FullGrad uses (Conv2d with a bias and
        BatchNorm; a BatchNorm's output must be ``[B, C, H, W]`` to count when called)."""
        return [
            n
            for n, m in model.named_modules()
            if n and ((isinstance(m, nn.Conv2d) and m.bias is not None) or isinstance(m, _BatchNorm))
        ]

    @staticmethod
    def _bias(module: nn.Module) -> Tensor:
        if isinstance(module, _BatchNorm):
            weight = module.weight
            bias = module.bias
            if module.running_mean is None or module.running_var is None:
                # batch statistics even in eval mode: no running mean to fold in
                return bias.detach() if bias is not None else torch.zeros(module.num_features)
            scale = torch.rsqrt(module.running_var + module.eps)
            if weight is not None:
                scale = weight.detach() * scale
            folded = -module.running_mean * scale
            return folded + bias.detach() if bias is not None else folded
        return module.bias.detach()

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        if inputs.ndim != 4:
            raise ValueError(f"FullGrad: expected images [B, C, H, W], but got shape {tuple(inputs.shape)}.")
        captures: list[tuple[nn.Module, LayerCapture]] = []
        for name in self.bias_layers(model):
            module = model.get_submodule(name)
            captures.append((module, capture_layer(ctx, model, name, method=type(self).__name__)))
        try:
            scores, _, _ = forward_scores(model, inputs, target)
        finally:
            for _, capture in captures:
                capture.remove()
        terms = [(m, z) for m, capture in captures for z in capture.outputs if z.ndim == 4 and z.requires_grad]
        grads = torch.autograd.grad(scores.sum(), [inputs] + [z for _, z in terms], allow_unused=True)
        size = inputs.shape[-2:]
        acc = accumulation_dtype(inputs.dtype)
        input_grad = (grads[0] if grads[0] is not None else torch.zeros_like(inputs)).to(acc)
        total = minmax_normalize((input_grad * inputs.detach().to(acc)).abs()).sum(dim=1, keepdim=True)
        for (module, _z), grad in zip(terms, grads[1:]):
            if grad is None:
                continue
            bias = self._bias(module).to(device=grad.device, dtype=acc)
            part = minmax_normalize((bias[None, :, None, None] * grad.to(acc)).abs()).sum(dim=1, keepdim=True)
            total = total + upsample(part, size, self.interpolate_mode)
        return total
