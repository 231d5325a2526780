"""Real-time saliency: a trained masking model (Dabkowski & Gal 2017, "Real time image saliency for
black box classifiers"), and the explainer that uses it.

A small encoder-decoder predicts, in one forward pass, a mask ``m`` in ``[0, 1]`` over the input
that keeps what a frozen classifier needs to recognise class ``c``. Its inputs are the image (a
shallow convolutional branch at half resolution) and the classifier's own feature maps at
``layer`` (captured by a forward hook), multiplied channel-wise by a learnt embedding of the class
(the paper's class selector), projected, upsampled and merged with the image branch; a sigmoid
gives the mask, bilinearly upsampled to the input size.

The paper's objective (:meth:`MaskingModel.loss_terms`), with ``Phi(x, m) = x * m + A * (1 - m)``
and ``A`` a Gaussian blur of ``x`` (or its mean colour, ``fill="mean"``)::

    L(m) = smooth_weight * TV(m) + area_weight * AV(m)
           - log f_c(Phi(x, m))                                  (preserve)
           + destroy_weight * f_c(Phi(x, 1 - m)) ** destroy_power  (destroy)

``f_c`` is the classifier's softmax probability of class ``c``, ``AV`` the mean mask value and
``TV`` the mean squared difference of neighbouring mask pixels. The paper's default weights are
``destroy_weight=5`` and ``destroy_power=0.3``; the area and smoothness weights depend on the image
size and are set here for small images. Not implemented from the paper: the pretrained ResNet-50
encoder (the classifier itself is the encoder here), the random choice among several
alternatives ``A`` (one fixed choice here: blur or mean colour) and training with fake class labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    TargetType,
    get_layer,
    last_conv_layer_name,
    model_device,
    resolve_target,
)
from lightning_xai.attribution.path import gaussian_blur
from lightning_xai.errors import LightningXAIError

__all__ = ["MaskingModel", "MaskingModelExplainer"]


class MaskingModel(nn.Module):
    """A masking network over a frozen classifier's features; one forward pass per saliency mask.

    Args:
        feature_channels: Channels of the classifier's feature map at ``layer``.
        num_classes: Number of classes of the classifier.
        in_channels: Channels of the input images.
        layer: Dotted name of the classifier layer whose output feeds the masker; ``None``: the
            classifier's last ``nn.Conv2d`` (looked up when the classifier is given).
        hidden: Width of the masker's convolutions.
        area_weight: ``lambda_2`` (area term ``AV(m)``).
        smooth_weight: ``lambda_1`` (total variation ``TV(m)``).
        destroy_weight: ``lambda_3``.
        destroy_power: ``lambda_4``.
        blur_sigma: Standard deviation (pixels) of the blur that replaces removed pixels.
        fill: What replaces removed pixels, ``A``: ``"blur"`` (``x`` blurred with ``blur_sigma``) or
            ``"mean"`` (each image's mean colour; removes a uniform shape's interior too, which a
            blur keeps).

    Raises:
        TypeError, ValueError: Bad arguments.

    Examples:
        >>> masker = MaskingModel(feature_channels=8, num_classes=3, in_channels=1)
        >>> masker(torch.rand(2, 1, 16, 16), torch.rand(2, 8, 4, 4), torch.tensor([0, 2])).shape
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self,
        feature_channels: int,
        num_classes: int,
        in_channels: int = 3,
        layer: Optional[str] = None,
        hidden: int = 16,
        area_weight: float = 1.0,
        smooth_weight: float = 1.0,
        destroy_weight: float = 5.0,
        destroy_power: float = 0.3,
        blur_sigma: float = 3.0,
        fill: str = "blur",
    ) -> None:
        super().__init__()
        self.feature_channels = check_int("feature_channels", feature_channels, 1)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.in_channels = check_int("in_channels", in_channels, 1)
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"Expected argument `layer` to be a str or None, but got {layer!r}.")
        self.layer = layer
        self.hidden = check_int("hidden", hidden, 1)
        self.area_weight = check_float("area_weight", area_weight, 0.0)
        self.smooth_weight = check_float("smooth_weight", smooth_weight, 0.0)
        self.destroy_weight = check_float("destroy_weight", destroy_weight, 0.0)
        self.destroy_power = check_float("destroy_power", destroy_power, 0.0)
        self.blur_sigma = check_float("blur_sigma", blur_sigma, 0.0)
        if self.blur_sigma <= 0:
            raise ValueError(f"Expected argument `blur_sigma` to be > 0, but got {blur_sigma}.")
        if fill not in ("blur", "mean"):
            raise ValueError(f"Expected argument `fill` to be 'blur' or 'mean', but got {fill!r}.")
        self.fill = fill
        h = self.hidden
        self.image_branch = nn.Sequential(
            nn.Conv2d(self.in_channels, h, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(h, h, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.class_selector = nn.Embedding(self.num_classes, self.feature_channels)
        nn.init.ones_(self.class_selector.weight)
        self.feature_proj = nn.Sequential(nn.Conv2d(self.feature_channels, h, 1), nn.ReLU())
        self.decoder = nn.Sequential(nn.Conv2d(2 * h, h, 3, padding=1), nn.ReLU(), nn.Conv2d(h, 1, 3, padding=1))

    def config(self) -> dict[str, Any]:
        """The constructor arguments (what :meth:`save` stores beside the weights)."""
        names = (
            "feature_channels num_classes in_channels layer hidden area_weight smooth_weight destroy_weight "
            "destroy_power blur_sigma fill"
        ).split()
        return {n: getattr(self, n) for n in names}

    # -- the mask ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, features: Tensor, target: Tensor) -> Tensor:
        """The mask ``[B, 1, H, W]`` in ``[0, 1]`` for images ``x`` ``[B, in_channels, H, W]``, the
        classifier's ``features`` ``[B, feature_channels, h, w]`` and classes ``target`` ``[B]``.

        Raises:
            ValueError: Shapes that do not match the configuration.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MaskingModel: expected images [B, {self.in_channels}, H, W] (in_channels={self.in_channels}), but "
                f"got {tuple(x.shape)}."
            )
        if features.ndim != 4 or features.shape[1] != self.feature_channels or features.shape[0] != x.shape[0]:
            raise ValueError(
                f"MaskingModel: expected classifier features [B={x.shape[0]}, {self.feature_channels}, h, w] at layer "
                f"{self.layer!r} (feature_channels={self.feature_channels}), but got {tuple(features.shape)}."
            )
        size = x.shape[-2:]
        image = self.image_branch(x)
        selected = features * self.class_selector(target).to(features.dtype)[:, :, None, None]
        feats = F.interpolate(self.feature_proj(selected), size=image.shape[-2:], mode="bilinear", align_corners=False)
        logits = self.decoder(torch.cat([image, feats], dim=1))
        mask = torch.sigmoid(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
        return mask

    def layer_name(self, classifier: nn.Module) -> str:
        """``layer``, or the classifier's last ``nn.Conv2d``."""
        return self.layer if self.layer is not None else last_conv_layer_name(classifier, method="MaskingModel")

    def check(self, classifier: nn.Module) -> None:
        """Raise ``ValueError`` if ``classifier`` has no layer ``layer`` or it has a different number of channels."""
        name = self.layer_name(classifier)
        module = get_layer(classifier, name, method="MaskingModel")
        channels = getattr(module, "out_channels", None)
        if isinstance(channels, int) and channels != self.feature_channels:
            raise ValueError(
                f"MaskingModel: the classifier's layer {name!r} has {channels} output channels, but the masking model "
                f"was built for feature_channels={self.feature_channels}."
            )

    def classifier_features(
        self, classifier: nn.Module, x: Tensor, ctx: Optional[ExplainContext] = None
    ) -> tuple[Tensor, Tensor]:
        """Run ``classifier`` on ``x``: ``(features at layer [B, K, h, w], logits [B, C])``.

        The hook is removed before returning (or by ``ctx`` when given), on every path.
        """
        name = self.layer_name(classifier)
        captured: list[Tensor] = []

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor):
                raise LightningXAIError(f"MaskingModel: layer {name!r} returned {type(output).__name__}, not a tensor.")
            captured.append(output.clone())  # a later in-place activation must not change it

        handle = get_layer(classifier, name, method="MaskingModel").register_forward_hook(hook)
        if ctx is not None:
            ctx.add_hook(handle)
        try:
            logits = classifier(x)
        finally:
            handle.remove()
        if not captured:
            raise LightningXAIError(f"MaskingModel: layer {name!r} was not called in the classifier's forward pass.")
        return captured[-1], logits

    def explain(self, classifier: nn.Module, x: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """The mask for ``x`` and ``target`` (``None``: the classifier's predicted class), with gradients."""
        features, logits = self.classifier_features(classifier, x)
        target = resolve_target(target, logits)
        return self(x, features.detach(), target)

    # -- the objective ----------------------------------------------------------------------------
    def alternative(self, x: Tensor) -> Tensor:
        """What replaces removed pixels (no gradient flows into it): ``x`` blurred with ``blur_sigma``
        (``fill="blur"``) or each image's per-channel mean (``fill="mean"``)."""
        if self.fill == "mean":
            return x.detach().mean(dim=(2, 3), keepdim=True).expand_as(x)
        return gaussian_blur(x, self.blur_sigma)

    def loss_terms(self, classifier: nn.Module, x: Tensor, mask: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The paper's objective as named terms (batch means; add them up to train).

        Returns:
            ``{"preserve": -log f_c(Phi(x, m)), "destroy": destroy_weight * f_c(Phi(x, 1 - m)) ** destroy_power,
            "area": area_weight * mean(m), "smoothness": smooth_weight * TV(m)}`` with
            ``TV(m) = mean((m[i, j] - m[i, j+1])^2) + mean((m[i, j] - m[i+1, j])^2)``.
        """
        alt = self.alternative(x)
        kept = x * mask + alt * (1 - mask)
        removed = x * (1 - mask) + alt * mask
        logits = classifier(torch.cat([kept, removed]))
        log_p = logits.log_softmax(dim=1).gather(1, target.repeat(2).view(-1, 1)).squeeze(1)
        log_keep, log_removed = log_p.chunk(2)
        tv = (mask[..., :, 1:] - mask[..., :, :-1]).square().mean() + (
            mask[..., 1:, :] - mask[..., :-1, :]
        ).square().mean()
        return {
            "preserve": -log_keep.mean(),
            "destroy": self.destroy_weight * log_removed.exp().clamp_min(1e-12).pow(self.destroy_power).mean(),
            "area": self.area_weight * mask.mean(),
            "smoothness": self.smooth_weight * tv,
        }

    # -- persistence ------------------------------------------------------------------------------
    def save(self, path: Union[str, Path]) -> Path:
        """Save configuration and weights to ``path`` (``torch.save``); :meth:`load` restores them."""
        path = Path(path)
        torch.save({"config": self.config(), "state_dict": self.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> MaskingModel:
        """A masking model from a file written by :meth:`save` (loaded with ``weights_only=True``)."""
        blob = torch.load(Path(path), map_location=map_location, weights_only=True)
        model = cls(**blob["config"])
        model.load_state_dict(blob["state_dict"])
        return model.eval()

    def extra_repr(self) -> str:
        return f"feature_channels={self.feature_channels}, num_classes={self.num_classes}, layer={self.layer!r}"


class MaskingModelExplainer(Explainer):
    """A trained :class:`MaskingModel` as an explainer: one classifier forward pass and one masker
    forward pass per batch, no backward pass. Registered as ``"masking_model"``.

    The explainer contract says *configuration only*: a trained masker is configuration too, the
    way a baseline image is. Give it either as ``weights`` (a path written by
    :meth:`MaskingModel.save`: a plain string, so a LightningCLI YAML can configure it; loaded on
    first use and cached) or as ``masker`` (the module itself, for use in the same process; it
    pickles with the explainer). The classifier still comes at call time, and must be the one the
    masker was trained against. The masker is moved to the classifier's device on use.

    Args:
        masker: A trained masking model.
        weights: Path to a saved masking model (used when ``masker`` is ``None``).

    Raises:
        TypeError: ``masker`` is not a :class:`MaskingModel` or ``weights`` not a path.

    Examples:
        >>> from torch import nn
        >>> clf = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> explainer = MaskingModelExplainer(masker=MaskingModel(4, 2, in_channels=1))
        >>> explainer(clf, torch.rand(3, 1, 8, 8)).shape
        torch.Size([3, 1, 8, 8])
    """

    registry_name: ClassVar[Optional[str]] = "masking_model"
    region: ClassVar[bool] = True
    signed: ClassVar[bool] = False

    def __init__(self, masker: Optional[MaskingModel] = None, weights: Optional[Union[str, Path]] = None) -> None:
        if masker is not None and not isinstance(masker, MaskingModel):
            raise TypeError(f"Expected `masker` to be a MaskingModel or None, but got {type(masker).__name__}.")
        if weights is not None and not isinstance(weights, (str, Path)):
            raise TypeError(f"Expected `weights` to be a path or None, but got {type(weights).__name__}.")
        self.masker = masker
        self.weights = str(weights) if weights is not None else None
        self._loaded: Optional[MaskingModel] = None

    @property
    def layer(self) -> Optional[str]:
        """The classifier layer the masker reads (``None``: the last ``nn.Conv2d``)."""
        return self.masker.layer if self.masker is not None else None

    def resolve_masker(self) -> MaskingModel:
        """The masking model: ``masker``, or the one saved at ``weights`` (loaded once).

        Raises:
            ValueError: Neither is given, or ``weights`` does not exist.
        """
        if self.masker is not None:
            return self.masker
        if self.weights is None:
            raise ValueError(
                "MaskingModelExplainer needs a trained masking model: pass `masker=` or `weights=` (a file written by "
                "MaskingModel.save)."
            )
        if self._loaded is None:
            if not Path(self.weights).is_file():
                raise ValueError(f"MaskingModelExplainer: no masking-model file at weights={self.weights!r}.")
            self._loaded = MaskingModel.load(self.weights)
        return self._loaded

    def check(self, model: nn.Module) -> None:
        self.resolve_masker().check(model)

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        masker = self.resolve_masker()
        device = model_device(model)
        if model_device(masker) != device:
            masker.to(device)
        was_training = masker.training
        masker.eval()
        try:
            with torch.no_grad():
                features, logits = masker.classifier_features(model, inputs, ctx)
                resolved = resolve_target(target, logits)
                return masker(inputs, features.to(inputs.dtype), resolved)
        finally:
            masker.train(was_training)

    def _config(self) -> dict[str, Any]:
        return {"masker": self.masker, "weights": self.weights}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loaded"] = None  # reloaded from `weights` on first use
        return state
