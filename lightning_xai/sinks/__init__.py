"""The logging layer: sinks that write rendered pictures, scalars, histograms, text and tables to
each logger of the Trainer, and the background writer that runs that work off the training thread.

Drawing lives in :mod:`lightning_xai.render` (tensors in, pictures out, no logger); this package
takes the pictures and talks to the loggers (:mod:`~lightning_xai.sinks.loggers`), on a bounded
worker thread (:mod:`~lightning_xai.sinks.writer`). It never knows which method made a tensor.
"""

from lightning_xai.sinks.loggers import (
    WANDB_INSTALL_HINT,
    DryRunSink,
    FileSink,
    Sink,
    TensorBoardSink,
    WandbSink,
    check_loggers,
    sinks_for,
    use_fast_tensorboard_crc,
)
from lightning_xai.sinks.writer import BackgroundWriter, RenderError

__all__ = [
    "WANDB_INSTALL_HINT",
    "BackgroundWriter",
    "DryRunSink",
    "FileSink",
    "RenderError",
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "check_loggers",
    "sinks_for",
    "use_fast_tensorboard_crc",
]
