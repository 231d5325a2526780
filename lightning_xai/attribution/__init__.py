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
from lightning_xai.attribution.perturbation import (
    RISE,
    BlurInfiller,
    ConditionalGaussianInfiller,
    CounterfactualInfill,
    ExtremalPerturbation,
    LocalMeanInfiller,
    MeaningfulPerturbation,
    Occlusion,
    PredictionDifference,
)
from lightning_xai.attribution.propagation import (
    LRP,
    Composite,
    DeepLift,
    DeepTaylor,
    PatternAttribution,
    PatternNet,
    estimate_patterns,
)
from lightning_xai.attribution.surrogate import (
    LIME,
    XRAI,
    AnchorResult,
    Anchors,
    KernelSHAP,
    superpixels,
)

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
    "RISE",
    "BlurInfiller",
    "ConditionalGaussianInfiller",
    "CounterfactualInfill",
    "ExtremalPerturbation",
    "LocalMeanInfiller",
    "MeaningfulPerturbation",
    "Occlusion",
    "PredictionDifference",
    "LIME",
    "XRAI",
    "AnchorResult",
    "Anchors",
    "KernelSHAP",
    "superpixels",
    "LRP",
    "Composite",
    "DeepLift",
    "DeepTaylor",
    "PatternAttribution",
    "PatternNet",
    "estimate_patterns",
]

# The trained masking model's explainer lives with its module: `lightning_xai.modules.MaskingModelExplainer`
# (`get_explainer("masking_model")` finds it). This package never imports lightning_xai.modules.
_MOVED = {"MaskingModelExplainer": "lightning_xai.modules.MaskingModelExplainer"}


def __getattr__(name: str) -> object:
    if name in _MOVED:
        raise AttributeError(
            f"`lightning_xai.attribution.{name}` has moved: import it as `{_MOVED[name]}` "
            "(this package does not import lightning_xai.modules)."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
