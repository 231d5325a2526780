"""STUB: replaced by the gradient-family implementation."""
from lightning_xai.attribution.base import Explainer


class Saliency(Explainer):
    def __init__(self, abs: bool = True) -> None:
        self.abs = abs

    def _attribute(self, model, inputs, target, ctx):
        raise NotImplementedError


class InputXGradient(Saliency):
    pass


class GuidedBackprop(Saliency):
    pass


class Deconvnet(Saliency):
    pass


class NoiseTunnel(Saliency):
    pass
