"""Pure metric functions; the Metric classes in :mod:`lightning_xai.metrics` wrap them."""

from lightning_xai.metrics.functional.maps import map_entropy, map_ssim, mask_share

__all__ = ["map_entropy", "map_ssim", "mask_share"]
