"""Grad-CAM (Selvaraju et al., 2016)."""

from __future__ import annotations

import torch  # noqa: F401 (the doctests use it)
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    ExplainContext,
    TargetType,
    accumulation_dtype,
)
from lightning_xai.attribution.cam.base import _LayerCAMBase, _spatial, weighted_channel_sum
from lightning_xai.attribution.capture import layer_activation_and_gradient

__all__ = ["GradCAM"]


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

    Examples:
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
        return weighted_channel_sum(self._weights(activation, gradient), activation), resolved
