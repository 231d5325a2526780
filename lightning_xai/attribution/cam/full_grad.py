"""FullGrad (Srinivas & Fleuret, 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    TargetType,
    accumulation_dtype,
    forward_scores,
)
from lightning_xai.attribution.cam.base import _check_mode, minmax_normalize, upsample
from lightning_xai.attribution.capture import LayerCapture, capture_layer

__all__ = ["FullGrad"]


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

    Examples:
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
