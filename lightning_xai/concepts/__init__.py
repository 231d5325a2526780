"""Concepts: CAVs, TCAV with significance testing, and Network Dissection. No Lightning import here.

* :class:`CAV` (Kim et al. 2018): a linear direction at a layer separating a concept's examples
  from random ones, trained in torch on the model's device.
* :class:`TCAV`: the fraction of a class's inputs whose score increases along a concept's CAV,
  with the paper's t-test against random CAVs and a Bonferroni correction.
* :class:`NetworkDissection` (Bau et al. 2017): per-unit IoU of thresholded activation maps with
  concept masks.

Example:
    >>> from lightning_xai.concepts import CAV, TCAV, TCAVResult, NetworkDissection
    >>> from lightning_xai.concepts.functional import directional_derivatives, tcav_score
"""

from lightning_xai.concepts.cav import CAV, CLASSIFIERS, MIN_EXAMPLES
from lightning_xai.concepts.dissection import DissectionResult, NetworkDissection
from lightning_xai.concepts.examples import ExampleSource, load_examples, sample_examples
from lightning_xai.concepts.tcav import TCAV, FittedCAVs, RandomSource, TCAVResult

__all__ = [
    "CAV",
    "CLASSIFIERS",
    "DissectionResult",
    "ExampleSource",
    "FittedCAVs",
    "MIN_EXAMPLES",
    "NetworkDissection",
    "RandomSource",
    "TCAV",
    "TCAVResult",
    "load_examples",
    "sample_examples",
]
