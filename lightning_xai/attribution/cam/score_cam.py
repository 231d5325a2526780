"""Score-CAM (Wang et al., 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import (
    ExplainContext,
    TargetType,
    accumulation_dtype,
    resolve_target,
    run_chunked,
    select_scores,
)
from lightning_xai.attribution.cam.base import _LayerCAMBase, _spatial, forward_chunk_rows, weighted_channel_sum
from lightning_xai.attribution.capture import capture_layer

__all__ = ["ScoreCAM"]


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

    Examples:
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
            return weighted_channel_sum(weights, activation), resolved
