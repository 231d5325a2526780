"""Guided Grad-CAM (Selvaraju et al., 2016)."""

from __future__ import annotations

from typing import ClassVar

import torch  # noqa: F401 (the doctests use it)
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    TargetType,
)
from lightning_xai.attribution.cam.base import upsample
from lightning_xai.attribution.cam.grad_cam import GradCAM
from lightning_xai.attribution.gradient import GuidedBackprop

__all__ = ["GuidedGradCAM"]


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

    Examples:
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
