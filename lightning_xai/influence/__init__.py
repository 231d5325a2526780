"""Training-data influence: which training examples made the model predict this? No Lightning import.

* :class:`TracIn` (Pruthi et al. 2020): learning-rate-weighted gradient dot products summed over
  checkpoints saved during training; self-influence ranks mislabelled examples.
* :class:`InfluenceFunction` (Koh & Liang 2017): ``-grad_test^T H^-1 grad_train`` at the final
  weights, with Hessian-vector products from ``torch.func`` (conjugate gradients, LiSSA, or the
  explicit Hessian for small layers).
"""

from lightning_xai.influence._common import (
    LAST_LINEAR,
    LOSSES,
    Checkpoint,
    DataSource,
    GradientLayers,
    LossType,
    check_gradient_layers,
    resolve_gradient_layers,
    selected_parameters,
)
from lightning_xai.influence.checkpoints import load_tracin_checkpoint, save_tracin_checkpoint, tracin_checkpoints
from lightning_xai.influence.functions import InfluenceFunction
from lightning_xai.influence.tracin import TopK, TracIn

__all__ = [
    "LAST_LINEAR",
    "GradientLayers",
    "check_gradient_layers",
    "resolve_gradient_layers",
    "LOSSES",
    "Checkpoint",
    "DataSource",
    "InfluenceFunction",
    "LossType",
    "TopK",
    "TracIn",
    "load_tracin_checkpoint",
    "save_tracin_checkpoint",
    "selected_parameters",
    "tracin_checkpoints",
]
