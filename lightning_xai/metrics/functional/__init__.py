"""Pure metric functions; the Metric classes in :mod:`lightning_xai.metrics` wrap them."""

from lightning_xai.metrics.functional.faithfulness import (
    curve_auc,
    deletion_auc,
    faithfulness_correlation,
    infidelity,
    insertion_auc,
    pixel_flipping,
    region_perturbation,
)
from lightning_xai.metrics.functional.localization import mask_aupr, mask_mass, pointing_game
from lightning_xai.metrics.functional.maps import map_entropy, map_ssim, mask_share
from lightning_xai.metrics.functional.randomization import (
    data_randomization,
    input_invariance,
    parameter_randomization,
    randomization_layers,
    shifted_model,
)
from lightning_xai.metrics.functional.reliability import internal_consistency, krippendorff_alpha, metric_reliability
from lightning_xai.metrics.functional.removal import linear_imputation, removal_masks, road, roar
from lightning_xai.metrics.functional.robustness import FragilityResult, fragility, local_lipschitz, max_sensitivity
from lightning_xai.metrics.functional.similarity import map_similarity

__all__ = ["map_entropy", "map_ssim", "mask_share"]
__all__ += [
    "FragilityResult",
    "curve_auc",
    "data_randomization",
    "deletion_auc",
    "faithfulness_correlation",
    "fragility",
    "infidelity",
    "input_invariance",
    "insertion_auc",
    "internal_consistency",
    "krippendorff_alpha",
    "linear_imputation",
    "local_lipschitz",
    "map_similarity",
    "mask_aupr",
    "mask_mass",
    "max_sensitivity",
    "metric_reliability",
    "parameter_randomization",
    "pixel_flipping",
    "pointing_game",
    "randomization_layers",
    "region_perturbation",
    "removal_masks",
    "road",
    "roar",
    "shifted_model",
]
