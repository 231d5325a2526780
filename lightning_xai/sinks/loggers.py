"""Sinks: one per logger of the Trainer, writing rendered images, scalars, histograms, text and
tables in that logger's own format.

A callback builds its sinks once with :func:`sinks_for(trainer.loggers) <sinks_for>` (after
:func:`check_loggers` at ``setup``) and calls them on rank zero only; it never asks which backend
it talks to. The sinks never know which method made a tensor.

* :class:`TensorBoardSink` (``TensorBoardLogger``): ``add_image``, ``add_scalar``,
  ``add_histogram``, ``add_text``, ``add_embedding`` (the projector) on ``logger.experiment``; a caption becomes a text entry
  ``<tag>/caption``; a table becomes a markdown text plus one image grid per image column.
* :class:`WandbSink` (``WandbLogger``): ``wandb.Image`` (with caption), ``wandb.Histogram``,
  ``wandb.Html`` and ``wandb.Table``, all through ``logger.log_metrics`` (see the class for how
  steps are handled).
* :class:`FileSink` (any other logger, e.g. ``CSVLogger``): scalars through
  ``logger.log_metrics``; PNG, text and CSV files under ``<log_dir>/xai/<tag>/step_<step>.*``.

``DummyLogger`` (what ``fast_dev_run`` installs) gets no sink.
"""

from __future__ import annotations

import csv
import html
import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers.logger import DummyLogger, Logger
from torch import Tensor

from lightning_xai.render.images import save_png, table_image, to_uint8_hwc

__all__ = [
    "Sink",
    "TensorBoardSink",
    "WandbSink",
    "FileSink",
    "DryRunSink",
    "sinks_for",
    "check_loggers",
    "use_fast_tensorboard_crc",
    "WANDB_INSTALL_HINT",
]

WANDB_INSTALL_HINT = 'pip install "lightning-xai[wandb]"'
"""How to install the optional W&B dependency."""


def _is_logger(logger: object, class_name: str) -> bool:
    """Whether ``logger``'s class, or a base of it, is called ``class_name``: recognises both
    ``pytorch_lightning.loggers`` and ``lightning.pytorch.loggers`` without importing either."""
    return any(cls.__name__ == class_name for cls in type(logger).__mro__)


def _is_image(value: object) -> bool:
    return isinstance(value, Tensor) and value.ndim == 3 and value.shape[0] in (1, 3)


def _check_image(image: object) -> Tensor:
    if not isinstance(image, Tensor):
        raise TypeError(f"Expected `image` to be a tensor, but got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"Expected `image` of shape [3, H, W], but got {tuple(image.shape)}.")
    return image.detach().float().cpu().clamp(0.0, 1.0)


def _fast_masked_crc32c(data: bytes) -> int:
    import google_crc32c

    x = google_crc32c.value(bytes(data))
    return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def use_fast_tensorboard_crc(enable: bool = True) -> bool:
    """Opt in to a C implementation of TensorBoard's record checksum (process-wide, undoable).

    Without TensorFlow, ``tensorboard`` checksums every event record with a pure-Python CRC-32C
    (about 10 ms per 100 kB of images). With ``google-crc32c`` installed, this replaces
    ``tensorboard.summary.writer.record_writer.masked_crc32c`` by the same function computed in C
    (identical output; TensorBoard's reader verifies it). It changes another library for every
    ``SummaryWriter`` in the process, so lightning_xai never calls it for you: call it yourself
    (once, before training) if the checksum shows up in your profile, and
    ``use_fast_tensorboard_crc(False)`` to put TensorBoard's own function back. Monitors write in a
    background thread, so the checksum does not stall training either way.

    Args:
        enable: ``True`` installs the C checksum, ``False`` restores TensorBoard's original.

    Returns:
        Whether the fast checksum is in use after the call.

    Examples:
        >>> use_fast_tensorboard_crc(False)
        False
    """
    try:
        from tensorboard.summary.writer import record_writer
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        return False
    original = getattr(record_writer, "_lightning_xai_original_crc", None)
    if not enable:
        if original is not None:
            record_writer.masked_crc32c = original
            del record_writer._lightning_xai_original_crc
        return False
    try:
        import google_crc32c
    except ImportError:
        return False
    if getattr(google_crc32c, "implementation", "c") != "c":
        return False
    if original is None:
        record_writer._lightning_xai_original_crc = record_writer.masked_crc32c
    record_writer.masked_crc32c = _fast_masked_crc32c
    return True


def _image_summary(tag: str, image: Tensor) -> Any:
    """A TensorBoard image summary, PNG-encoded with zlib level 1.

    ``SummaryWriter.add_image`` uses PIL's default level 6, which costs about 3x as much on the
    large, flat images a monitor logs every epoch, for files only slightly smaller.
    """
    import io

    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    array = to_uint8_hwc(image)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)  # flat heatmaps: level 6 gains ~3%
    encoded = Summary.Image(
        height=array.shape[0], width=array.shape[1], colorspace=3, encoded_image_string=buffer.getvalue()
    )
    return Summary(value=[Summary.Value(tag=tag, image=encoded)])


def _cell_value(value: Any) -> Any:
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    return value


def _check_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise ValueError(
                f"Expected {len(columns)} cells per row (columns {list(columns)}), but row {i} has {len(row)}."
            )


class Sink(ABC):
    """Where a callback's rendered output goes; one per logger.

    Images are ``[3, H, W]`` float in ``[0, 1]``; ``step`` is the trainer's global step. Only
    :meth:`log_image` and :meth:`log_scalars` are required; the others default to doing nothing,
    so a backend without histograms or tables simply skips them.
    """

    @abstractmethod
    def log_image(self, tag: str, image: Tensor, step: int, caption: str | None = None) -> None:
        """Log one ``[3, H, W]`` image in ``[0, 1]`` under ``tag``."""

    @abstractmethod
    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Log named scalars."""

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:  # noqa: B027
        """Log the distribution of ``values`` (any shape). Default: nothing."""

    def log_text(self, tag: str, text: str, step: int) -> None:  # noqa: B027
        """Log a text (markdown where the backend renders it). Default: nothing."""

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:  # noqa: B027
        """Log a table; cells are str / int / float or ``[3, H, W]`` image tensors. Default: nothing."""

    def log_embedding(  # noqa: B027
        self,
        tag: str,
        vectors: Tensor,
        step: int,
        labels: list[str] | None = None,
        images: Tensor | None = None,
    ) -> None:
        """Log ``[N, D]`` vectors (CAVs, prototypes) for an embedding viewer, optionally with one
        label and one ``[N, 3, H, W]`` thumbnail each. Default: nothing."""

    def flush(self) -> None:  # noqa: B027
        """Make everything logged so far visible on disk. Default: nothing."""


class TensorBoardSink(Sink):
    """Writes to a ``TensorBoardLogger``'s ``SummaryWriter`` (``logger.experiment``).

    TensorBoard has no image captions and no tables: a caption is logged as the text
    ``<tag>/caption``; a table as one labelled picture ``<key>`` (a header row of column names,
    image cells as thumbnails, other cells as text: :func:`~lightning_xai.render.images.table_image`)
    plus, when it has text columns, a markdown text ``<key>`` of those columns.

    Args:
        logger: The ``TensorBoardLogger``.
    """

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    @property
    def writer(self) -> Any:
        """The ``SummaryWriter``."""
        return self.logger.experiment

    def log_image(self, tag: str, image: Tensor, step: int, caption: str | None = None) -> None:
        image = _check_image(image)
        file_writer = getattr(self.writer, "file_writer", None) or getattr(self.writer, "_get_file_writer", None)
        if callable(file_writer):
            file_writer = file_writer()
        if file_writer is None:  # not torch's SummaryWriter: let it encode
            self.writer.add_image(tag, image, global_step=step, dataformats="CHW")
        else:
            file_writer.add_summary(_image_summary(tag, image), step)
        if caption:
            self.log_text(f"{tag}/caption", caption, step)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, float(value), global_step=step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        values = values.detach().float().cpu().flatten()
        values = values[torch.isfinite(values)]
        if values.numel():
            self.writer.add_histogram(tag, values, global_step=step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        # markdown: a single newline is not a line break, two trailing spaces make one
        self.writer.add_text(tag, text.replace("\n", "  \n"), global_step=step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        _check_table(columns, rows)
        cells = [[v if _is_image(v) else _cell_value(v) for v in row] for row in rows]
        self.log_image(key, table_image(columns, cells), step)
        text_columns = [j for j in range(len(columns)) if not any(_is_image(row[j]) for row in rows)]
        if text_columns:
            lines = ["| " + " | ".join(columns[j] for j in text_columns) + " |", "|" + "---|" * len(text_columns)]
            for row in cells:
                lines.append("| " + " | ".join(str(row[j]).replace("|", "\\|") for j in text_columns) + " |")
            lines.append("")
            lines.append(f"The image `{key}` shows every column, thumbnails included.")
            self.writer.add_text(key, "\n".join(lines), global_step=step)

    def log_embedding(
        self,
        tag: str,
        vectors: Tensor,
        step: int,
        labels: list[str] | None = None,
        images: Tensor | None = None,
    ) -> None:
        vectors = vectors.detach().float().cpu()
        if vectors.ndim != 2:
            raise ValueError(f"Expected `vectors` of shape [N, D], but got {tuple(vectors.shape)}.")
        if labels is not None and len(labels) != vectors.shape[0]:
            raise ValueError(f"Expected {vectors.shape[0]} labels (one per vector), but got {len(labels)}.")
        label_img = None if images is None else images.detach().float().cpu().clamp(0.0, 1.0)
        self.writer.add_embedding(vectors, metadata=labels, label_img=label_img, global_step=step, tag=tag)

    def flush(self) -> None:
        self.writer.flush()


class WandbSink(Sink):
    """Writes to a ``WandbLogger``'s run as ``wandb`` media.

    Steps: W&B's own step must only grow, and Lightning's ``WandbLogger`` never passes one;
    it logs ``{..., "trainer/global_step": step}`` and declares ``trainer/global_step`` the
    x-axis of every key (``define_metric("*", step_metric="trainer/global_step")``). This sink
    does exactly the same by calling ``logger.log_metrics(payload, step)`` (as the logger's own
    ``log_image`` and ``log_table`` do), so our media and Lightning's metrics share one x-axis,
    the logger's ``prefix`` applies, and no call can make W&B drop data for a non-monotonic
    step. We never use ``commit=False``: a pending row would be merged into Lightning's next
    ``log`` call and take that call's ``trainer/global_step``.

    Args:
        logger: The ``WandbLogger``.
    """

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    @staticmethod
    def _wandb() -> Any:
        try:
            return importlib.import_module("wandb")
        except ImportError as err:  # pragma: no cover - check_loggers reports this at setup
            raise ImportError(f"Logging to a WandbLogger needs wandb: {WANDB_INSTALL_HINT}") from err

    def _log(self, payload: dict[str, Any], step: int) -> None:
        self.logger.log_metrics(payload, step)

    def _image(self, image: Tensor, caption: str | None = None) -> Any:
        return self._wandb().Image(to_uint8_hwc(_check_image(image)), caption=caption)

    def log_image(self, tag: str, image: Tensor, step: int, caption: str | None = None) -> None:
        self._log({tag: self._image(image, caption)}, step)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        if scalars:
            self._log({name: float(value) for name, value in scalars.items()}, step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        values = values.detach().float().cpu().flatten()
        values = values[torch.isfinite(values)]
        if values.numel():
            self._log({tag: self._wandb().Histogram(values.numpy())}, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._log({tag: self._wandb().Html(f"<pre>{html.escape(text)}</pre>")}, step)

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        _check_table(columns, rows)
        data = [[self._image(v) if _is_image(v) else _cell_value(v) for v in row] for row in rows]
        self._log({key: self._wandb().Table(columns=list(columns), data=data)}, step)


class DryRunSink(Sink):
    """Encodes everything it is given exactly as a real sink would, and writes nothing.

    A monitor's fit-start dry run renders into it, so a picture that cannot be drawn or encoded
    (wrong shape, non-finite scalar type, ragged table) fails before the first training step.
    """

    def log_image(self, tag: str, image: Tensor, step: int, caption: str | None = None) -> None:
        import io

        from PIL import Image

        Image.fromarray(to_uint8_hwc(_check_image(image))).save(io.BytesIO(), format="PNG", compress_level=0)

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            float(value)
            if not isinstance(name, str):
                raise TypeError(f"Expected scalar names to be str, but got {name!r}.")

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        values.detach().float().cpu().flatten()

    def log_text(self, tag: str, text: str, step: int) -> None:
        if not isinstance(text, str):
            raise TypeError(f"Expected `text` to be a str, but got {type(text).__name__}.")

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        _check_table(columns, rows)
        for row in rows:
            for value in row:
                if _is_image(value):
                    to_uint8_hwc(_check_image(value))

    def log_embedding(
        self,
        tag: str,
        vectors: Tensor,
        step: int,
        labels: list[str] | None = None,
        images: Tensor | None = None,
    ) -> None:
        if vectors.ndim != 2:
            raise ValueError(f"Expected `vectors` of shape [N, D], but got {tuple(vectors.shape)}.")
        if labels is not None and len(labels) != vectors.shape[0]:
            raise ValueError(f"Expected {vectors.shape[0]} labels (one per vector), but got {len(labels)}.")


_SAFE = re.compile(r"[^A-Za-z0-9_.\-=]+")


def _safe_parts(tag: str) -> list[str]:
    """A tag as path parts: ``/`` separates folders, other unsafe characters become ``_``."""
    parts = [_SAFE.sub("_", p) for p in tag.split("/")]
    parts = [p for p in parts if p and p not in (".", "..")]
    return parts or ["_"]


class FileSink(Sink):
    """Writes files for any logger without image support (``CSVLogger``, MLflow, ...).

    Scalars go through ``logger.log_metrics`` (so they land in the CSV of a ``CSVLogger``).
    Everything else is written under ``root`` (default ``<logger.log_dir or logger.save_dir>``; the
    monitors' tags all start with ``xai/``, so their files land in ``<log_dir>/xai/``):
    ``<tag>/step_<step>.png`` (caption in ``step_<step>.txt`` beside it), text as
    ``<tag>/step_<step>.txt``, histograms as ``<tag>/step_<step>.hist.csv`` (bin edges and
    counts), tables as ``<key>/step_<step>.csv`` with image cells saved as
    ``<key>/step_<step>/row<i>_<column>.png`` and referenced by that relative path. A ``/`` in a
    tag makes folders.

    Args:
        logger: The logger.
        root: Folder to write into instead of the logger's.
    """

    def __init__(self, logger: Logger, root: str | Path | None = None) -> None:
        self.logger = logger
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        """The folder everything but scalars is written into (resolved on first use)."""
        if self._root is None:
            base = getattr(self.logger, "log_dir", None) or getattr(self.logger, "save_dir", None) or "."
            self._root = Path(base)  # tags start with "xai/": files land in <log_dir>/xai/...
        return self._root

    def _path(self, tag: str, step: int, suffix: str) -> Path:
        folder = self.root.joinpath(*_safe_parts(tag))
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"step_{int(step)}{suffix}"

    def log_image(self, tag: str, image: Tensor, step: int, caption: str | None = None) -> None:
        save_png(_check_image(image), self._path(tag, step, ".png"))
        if caption:
            self._path(tag, step, ".txt").write_text(caption, encoding="utf-8")

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        if scalars:
            self.logger.log_metrics({name: float(value) for name, value in scalars.items()}, step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        values = values.detach().double().cpu().flatten()
        values = values[torch.isfinite(values)]
        if not values.numel():
            return
        counts, edges = torch.histogram(values, bins=64)
        with self._path(tag, step, ".hist.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["bin_start", "bin_end", "count"])
            for i in range(counts.numel()):
                writer.writerow([float(edges[i]), float(edges[i + 1]), int(counts[i])])

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._path(tag, step, ".txt").write_text(text, encoding="utf-8")

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        _check_table(columns, rows)
        path = self._path(key, step, ".csv")
        media = path.with_suffix("")  # <key>/step_<step>/
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for i, row in enumerate(rows):
                cells = []
                for column, value in zip(columns, row):
                    if _is_image(value):
                        name = f"row{i}_{_safe_parts(str(column))[0]}.png"
                        save_png(_check_image(value), media / name)
                        cells.append(f"{media.name}/{name}")
                    else:
                        cells.append(_cell_value(value))
                writer.writerow(cells)

    def flush(self) -> None:
        self.logger.save()


def sinks_for(loggers: Sequence[Logger]) -> list[Sink]:
    """One sink per logger, in order: :class:`TensorBoardSink` for a ``TensorBoardLogger``,
    :class:`WandbSink` for a ``WandbLogger``, :class:`FileSink` for any other; a ``DummyLogger``
    (installed by ``fast_dev_run``) gets none.

    Args:
        loggers: ``trainer.loggers``.

    Returns:
        The sinks (empty when there is no real logger).

    Examples:
        >>> from pytorch_lightning.loggers import CSVLogger
        >>> [type(s).__name__ for s in sinks_for([CSVLogger("logs")])]
        ['FileSink']
    """
    sinks: list[Sink] = []
    for logger in loggers:
        if isinstance(logger, DummyLogger) or _is_logger(logger, "DummyLogger"):
            continue
        if _is_logger(logger, "TensorBoardLogger"):
            sinks.append(TensorBoardSink(logger))
        elif _is_logger(logger, "WandbLogger"):
            sinks.append(WandbSink(logger))
        else:
            sinks.append(FileSink(logger))
    return sinks


def check_loggers(loggers: Sequence[Logger]) -> None:
    """Fail early (at a callback's ``setup``) when the explanations would have nowhere to go.

    Args:
        loggers: ``trainer.loggers``.

    Raises:
        ValueError: There is no logger at all (``Trainer(logger=False)``).
        ImportError: A ``WandbLogger`` is attached but ``wandb`` cannot be imported; the message
            gives ``pip install "lightning-xai[wandb]"``.
    """
    if not loggers:
        raise ValueError(
            "lightning_xai callbacks write their explanations to the Trainer's loggers, but the Trainer has none "
            "(was it created with `logger=False`?). Attach a TensorBoardLogger, e.g. "
            "`Trainer(logger=TensorBoardLogger('logs'))`, or a WandbLogger or CSVLogger."
        )
    for logger in loggers:
        if _is_logger(logger, "WandbLogger"):
            try:
                importlib.import_module("wandb")
            except ImportError as err:
                raise ImportError(
                    f"A WandbLogger is attached but `wandb` cannot be imported ({err}). Install it with "
                    f"`{WANDB_INSTALL_HINT}`."
                ) from err
