"""Rendering: attribution maps to images and figures, and sinks that write them to loggers.

:mod:`lightning_xai.render.images` is pure tensor/numpy/matplotlib. :mod:`lightning_xai.render.sinks`
knows Lightning's loggers (TensorBoard, W&B, any other) and is imported on first access of its
names here, so ``lightning_xai.render`` itself does not import Lightning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from lightning_xai.render.sinks import FileSink, Sink, TensorBoardSink, WandbSink, check_loggers, sinks_for

__all__ = [
    "DEFAULT_SIGNED_CMAP",
    "DEFAULT_UNSIGNED_CMAP",
    "FileSink",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "annotated_grid",
    "check_loggers",
    "colormap_lut",
    "evolution_strip",
    "heatmap_to_rgb",
    "image_grid",
    "normalize_maps",
    "overlay",
    "reduce_channels",
    "save_png",
    "sinks_for",
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
        from lightning_xai.render import sinks

        return getattr(sinks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from lightning_xai.render.influence import class_name, proponents_grid, self_influence_grid  # noqa: E402

__all__ += ["class_name", "proponents_grid", "self_influence_grid"]
