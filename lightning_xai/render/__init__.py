"""Rendering: attribution maps to images and figures (pure tensor/numpy/matplotlib, no logger).

Writing the pictures to Lightning's loggers is the logging layer's job: :mod:`lightning_xai.sinks`.
The sink names once exported here (``Sink``, ``sinks_for``, ...) still resolve, with a
``DeprecationWarning``, for one release.
"""

from __future__ import annotations

from lightning_xai._deprecation import forward_names
from lightning_xai.render.images import (
    DEFAULT_SIGNED_CMAP,
    DEFAULT_UNSIGNED_CMAP,
    annotated_grid,
    colormap_lut,
    evolution_strip,
    heatmap_to_rgb,
    image_grid,
    normalize_maps,
    overlay,
    reduce_channels,
    save_png,
    to_display,
    to_uint8_hwc,
)
from lightning_xai.render.prototypes import crop_patches, draw_boxes, prototype_gallery, this_looks_like_that

__all__ = [
    "DEFAULT_SIGNED_CMAP",
    "DEFAULT_UNSIGNED_CMAP",
    "annotated_grid",
    "colormap_lut",
    "evolution_strip",
    "heatmap_to_rgb",
    "image_grid",
    "normalize_maps",
    "overlay",
    "reduce_channels",
    "save_png",
    "to_display",
    "to_uint8_hwc",
    "crop_patches",
    "draw_boxes",
    "prototype_gallery",
    "this_looks_like_that",
]

_SINK_NAMES = frozenset({"FileSink", "Sink", "TensorBoardSink", "WandbSink", "check_loggers", "sinks_for"})
# lazy: drawing does not import the logging layer
__getattr__ = forward_names(__name__, "lightning_xai.sinks", names=_SINK_NAMES)


from lightning_xai.render.influence import class_name, proponents_grid, self_influence_grid  # noqa: E402

__all__ += ["class_name", "proponents_grid", "self_influence_grid"]
