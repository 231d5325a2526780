"""What the class-activation-map family shares: upsampling, normalisation, the weighted channel
sum, chunk sizing and the layer-map base class."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    DEFAULT_CHUNK_ELEMENTS,
    ExplainContext,
    Explainer,
    OutputType,
    TargetType,
    accumulation_dtype,
    default_chunk_rows,
    get_layer,
    last_conv_layer_name,
)
from lightning_xai.attribution.cam.layers import LAST_CONV, is_global_pool, pooled_layer
from lightning_xai.attribution.capture import INPUT_SUFFIX
from lightning_xai.errors import LightningXAIError

__all__ = ["forward_chunk_rows", "minmax_normalize", "upsample", "weighted_channel_sum"]

_INTERPOLATE_MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")


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

    Examples:
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

    Examples:
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


def weighted_channel_sum(weights: Tensor, activation: Tensor) -> Tensor:
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

    Examples:
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
        name = self.layer[: -len(INPUT_SUFFIX)] if self.layer.endswith(INPUT_SUFFIX) else self.layer
        module = get_layer(model, name, method=method)
        if name == self.layer and (is_global_pool(module) or isinstance(module, (nn.Flatten, nn.Linear))):
            raise ValueError(
                f"{method}: layer {name!r} ({type(module).__name__}) has no spatial output (1 x 1 at most), so its "
                f"map would be constant over the image. Explain the feature map it consumes (`layer={name + INPUT_SUFFIX!r}`"
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

    @abstractmethod
    def _layer_map(
        self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext
    ) -> tuple[Tensor, Tensor]:
        """``([B, 1, h, w] map, resolved [B] target)``."""

    def _where(self) -> str:
        return f" at layer {self.layer!r}" if self.layer else " at the default layer (the global pool's input)"
