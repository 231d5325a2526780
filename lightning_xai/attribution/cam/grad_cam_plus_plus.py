"""Grad-CAM++ (Chattopadhyay et al., 2018)."""

from __future__ import annotations

import torch
from torch import Tensor, nn  # noqa: F401 (nn: the doctests use it)

from lightning_xai.attribution.base import (
    accumulation_dtype,
)
from lightning_xai.attribution.cam.grad_cam import GradCAM

__all__ = ["GradCAMPlusPlus"]


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

    Examples:
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
