"""Rendering: attribution maps to images and figures (pure tensor/numpy/matplotlib, no logger).

Writing the pictures to Lightning's loggers is the logging layer's job: :mod:`lightning_xai.sinks`.
The sink names once exported here (``Sink``, ``sinks_for``, ...) still resolve, with a
``DeprecationWarning``, for one release.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _SINK_NAMES:
        # lazy and dynamic: drawing does not import the logging layer
        warnings.warn(
            f"`lightning_xai.render.{name}` moved to `lightning_xai.sinks.{name}`; "
            "the old path goes away in the next release.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("lightning_xai.sinks"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from lightning_xai.render.influence import class_name, proponents_grid, self_influence_grid  # noqa: E402

__all__ += ["class_name", "proponents_grid", "self_influence_grid"]
