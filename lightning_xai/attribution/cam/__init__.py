"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM, Guided Grad-CAM and FullGrad.

One method per module (``grad_cam.py``, ``score_cam.py``, ...) on the shared base in ``base.py``;
the default layer is found in ``layers.py`` and the layer hook lives in
:mod:`lightning_xai.attribution.capture`.

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
way): the map is identical to the one computed on the same model with the in-place flags off.

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

from lightning_xai.attribution.cam.base import (
    forward_chunk_rows,
    minmax_normalize,
    upsample,
    weighted_channel_sum,
)
from lightning_xai.attribution.cam.cam import CAM
from lightning_xai.attribution.cam.full_grad import FullGrad
from lightning_xai.attribution.cam.grad_cam import GradCAM
from lightning_xai.attribution.cam.grad_cam_plus_plus import GradCAMPlusPlus
from lightning_xai.attribution.cam.guided_grad_cam import GuidedGradCAM
from lightning_xai.attribution.cam.layers import (
    LAST_CONV,
    activated_last_conv,
    default_cam_layer,
    global_pool_name,
    is_global_pool,
    pooled_layer,
)
from lightning_xai.attribution.cam.score_cam import ScoreCAM
from lightning_xai.attribution.capture import LayerCapture, capture_layer, layer_activation_and_gradient

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
    "is_global_pool",
    "pooled_layer",
    "layer_activation_and_gradient",
    "minmax_normalize",
    "upsample",
    "weighted_channel_sum",
]
