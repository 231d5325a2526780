"""Attribution methods over ``(model, inputs, target)``. No Lightning import here.

Every explainer holds configuration only and is called as ``explainer(model, inputs, target)``.
"""

from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    OutputType,
    TargetType,
    available_explainers,
    get_explainer,
    get_layer,
    last_conv_layer_name,
    observe,
    register_explainer,
    resolve_target,
    select_output,
)
from lightning_xai.attribution.cam import (
    CAM,
    LAST_CONV,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    ScoreCAM,
    default_cam_layer,
    minmax_normalize,
    upsample,
)
from lightning_xai.attribution.gradient import (
    Deconvnet,
    GuidedBackprop,
    InputXGradient,
    NoiseTunnel,
    Saliency,
    modified_relu,
)
from lightning_xai.attribution.path import IntegratedGradients, gaussian_blur, make_baseline

__all__ = [
    "CAM",
    "Deconvnet",
    "ExplainContext",
    "Explainer",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "InputXGradient",
    "IntegratedGradients",
    "NoiseTunnel",
    "Saliency",
    "ScoreCAM",
    "TargetType",
    "available_explainers",
    "get_explainer",
    "gaussian_blur",
    "get_layer",
    "last_conv_layer_name",
    "make_baseline",
    "minmax_normalize",
    "modified_relu",
    "observe",
    "register_explainer",
    "resolve_target",
    "upsample",
    "LAST_CONV",
    "OutputType",
    "default_cam_layer",
    "select_output",
]
