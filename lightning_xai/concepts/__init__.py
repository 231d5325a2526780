"""Concepts: CAVs, TCAV with significance testing, and Network Dissection. No Lightning import here.

* :class:`CAV` (Kim et al. 2018): a linear direction at a layer separating a concept's examples
  from random ones, trained in torch on the model's device.
* :class:`TCAV`: how a class's score changes along a concept's CAV (or a relative CAV of one
  concept against another), tested against random-vs-random CAVs with a Bonferroni correction.
* :class:`NetworkDissection` (Bau et al. 2017): per-unit IoU of thresholded activation maps with
  concept masks.

Examples:
    >>> from lightning_xai.concepts import CAV, TCAV, TCAVResult, NetworkDissection
    >>> from lightning_xai.concepts.functional import directional_derivatives, tcav_score
"""

from lightning_xai.concepts.cav import CAV, CLASSIFIERS, MIN_EXAMPLES
from lightning_xai.concepts.dissection import DissectionResult, NetworkDissection
from lightning_xai.concepts.examples import ExampleSource, load_examples, sample_examples
from lightning_xai.concepts.tcav import STATISTICS, TCAV, TESTS, FittedCAVs, RandomSource, TCAVResult, relative_name

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
    "STATISTICS",
    "TESTS",
    "relative_name",
    "load_examples",
    "sample_examples",
]
