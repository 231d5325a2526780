"""STUB: replaced by the CAM-family implementation."""
from lightning_xai.attribution.base import Explainer


class GradCAM(Explainer):
    region = True
    signed = False

    def __init__(self, layer=None) -> None:
        self.layer = layer

    def _attribute(self, model, inputs, target, ctx):
        raise NotImplementedError


class CAM(GradCAM):
    pass


class GuidedGradCAM(GradCAM):
    pass


class GradCAMPlusPlus(GradCAM):
    pass


class ScoreCAM(GradCAM):
    pass


class FullGrad(GradCAM):
    pass
