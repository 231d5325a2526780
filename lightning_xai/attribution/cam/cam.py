"""Class activation mapping (Zhou et al., 2016)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    ExplainContext,
    TargetType,
    accumulation_dtype,
    get_layer,
    resolve_target,
)
from lightning_xai.attribution.cam.base import _check_name, _LayerCAMBase, _spatial, weighted_channel_sum
from lightning_xai.attribution.cam.layers import _is_global
from lightning_xai.attribution.capture import INPUT_SUFFIX, capture_layer
from lightning_xai.errors import LightningXAIError

__all__ = ["CAM"]


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

    Examples:
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
            return self._head(model)[2] + INPUT_SUFFIX
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
        return weighted_channel_sum(weights, activation), resolved
