"""Input perturbation: occlusion, RISE, meaningful and extremal perturbation, prediction
difference analysis and counterfactual in-filling.

Every method here is model-agnostic: it asks the model about perturbed copies of the input and
never differentiates the model w.r.t. its parameters. Perturbed inputs go through the model in
chunks of ``internal_batch_size`` rows (default: a device-aware bound, see
:func:`~lightning_xai.attribution.sampling.default_chunk_size`); random draws come from a private
``torch.Generator`` seeded with ``seed`` (the global RNG is untouched) and are shared by every
input of a batch, so a batch gives the same maps as its inputs explained one by one.

* :class:`Occlusion` (Zeiler & Fergus 2013): score drop when a sliding window is replaced by a
  baseline; equal to captum ``Occlusion``. Input-shaped.
* :class:`RISE` (Petsiuk et al. 2018): score-weighted sum of random smooth masks.
* :class:`MeaningfulPerturbation` (Fong & Vedaldi 2017): the smallest smooth blur mask that
  deletes the evidence.
* :class:`ExtremalPerturbation` (Fong, Patrick & Vedaldi 2019): the smooth-max mask of a fixed
  area that keeps (or deletes) the most evidence through a blur pyramid, the area enforced by a
  ranking constraint; TorchRay's method (its oracle test compares with ``torchray``).
* :class:`PredictionDifference` (Zintgraf et al. 2017): weight of evidence of each patch,
  marginalised by conditional Gaussian sampling from its neighbourhood.
* :class:`CounterfactualInfill` (Chang et al. 2019, FIDO): a Concrete dropout mask whose removed
  pixels come from an in-filler (blur, local mean, conditional Gaussian, or any ``nn.Module``).

The region methods (RISE, meaningful and extremal perturbation, in-filling) return non-negative
``[B, 1, H, W]`` maps; occlusion and prediction difference return signed, input-shaped maps.

One method per module (``occlusion.py``, ``rise.py``, ``meaningful.py``, ``extremal.py``,
``prediction_difference.py``, ``counterfactual.py`` with its ``infillers.py``) on the shared
helpers of ``base.py``; this package re-exports every public name.
"""

from lightning_xai.attribution.perturbation.base import smooth
from lightning_xai.attribution.perturbation.counterfactual import CounterfactualInfill
from lightning_xai.attribution.perturbation.extremal import (
    ExtremalPerturbation,
    SmoothMaskGenerator,
    apply_pyramid,
    blur_pyramid,
)
from lightning_xai.attribution.perturbation.infillers import (
    INFILLERS,
    BlurInfiller,
    ConditionalGaussianInfiller,
    LocalMeanInfiller,
)
from lightning_xai.attribution.perturbation.meaningful import MeaningfulPerturbation
from lightning_xai.attribution.perturbation.occlusion import Occlusion
from lightning_xai.attribution.perturbation.prediction_difference import PredictionDifference
from lightning_xai.attribution.perturbation.rise import RISE

__all__ = [
    "BlurInfiller",
    "ConditionalGaussianInfiller",
    "CounterfactualInfill",
    "ExtremalPerturbation",
    "INFILLERS",
    "LocalMeanInfiller",
    "MeaningfulPerturbation",
    "Occlusion",
    "PredictionDifference",
    "RISE",
    "SmoothMaskGenerator",
    "apply_pyramid",
    "blur_pyramid",
    "smooth",
]
