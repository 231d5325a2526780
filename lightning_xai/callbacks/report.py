"""One self-contained HTML page of a run's explanations, built from its TensorBoard event files.

:class:`XAIReport` writes it at the end of fit; ``lightning-xai report LOG_DIR`` writes the same page
afterwards from the same logs (so it also serves runs that had no report callback). Nothing is
computed a second time: the page shows the images the monitors rendered and plots the scalars they
logged.
"""

from __future__ import annotations

import base64
import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from typing_extensions import override

__all__ = ["XAIReport", "build_report", "read_event_files"]

#: Section order: the alarms first, then training, then one section per monitor group.
GROUP_ORDER = ("shortcut", "training", "saliency", "tcav", "tracin", "metrics", "sanity", "prototypes", "dissection")
TITLES = {
    "shortcut": "Shortcut alarms",
    "training": "Training metrics",
    "saliency": "Saliency",
    "tcav": "TCAV (concepts, with significance)",
    "tracin": "Self-influence (TracIn)",
    "metrics": "Explanation quality",
    "sanity": "Sanity checks (model randomisation)",
    "prototypes": "Prototypes",
    "dissection": "Network dissection",
    "patterns": "Pattern estimation",
}
_LIGHTNING_OWN = {"epoch", "hp_metric"}
# images that come one per probe: shown after the group's summary pictures
_PER_PROBE = re.compile(r"/(evolution|proponents|this_looks_like_that)/\d+$")


@dataclass
class RunLogs:
    """What a run logged, as read from its event files.

    Attributes:
        scalars: tag -> ``[(step, value), ...]`` sorted by step.
        images: tag -> ``(step, encoded image bytes)``, the last image of each tag.
        texts: tag -> the last text of each tag (captions and markdown tables).
    """

    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    images: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


def read_event_files(log_dir: str | Path) -> RunLogs:
    """Read every scalar, the last image and the last text of each tag of one run's event files.

    Args:
        log_dir: A run's directory (a ``TensorBoardLogger``'s ``log_dir``: ``<save_dir>/<name>/version_<n>``),
            or a folder holding exactly one such run.

    Returns:
        The run's logs. Cost: reading every event file in full (TensorBoard's ``EventAccumulator`` with no
        size limits), then keeping the last image of each tag.

    Raises:
        FileNotFoundError: No event file under ``log_dir``.
        ValueError: The event files lie in several directories (several runs): pass one run's directory.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = Path(log_dir)
    files = sorted(log_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"No TensorBoard event file under {str(log_dir)!r}.")
    dirs = sorted({f.parent for f in files})
    if len(dirs) > 1:
        listed = ", ".join(str(d) for d in dirs[:5])
        raise ValueError(
            f"Expected the event files of one run under {str(log_dir)!r}, but found {len(dirs)} runs: {listed}."
        )
    logs = RunLogs()
    scalars: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    images: dict[str, tuple[int, float, bytes]] = {}
    texts: dict[str, tuple[int, float, str]] = {}
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "tensors": 0, "histograms": 1})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            scalars[tag] += [(e.step, e.wall_time, float(e.value)) for e in acc.Scalars(tag)]
        for tag in tags.get("images", []):
            for e in acc.Images(tag):
                if tag not in images or (e.step, e.wall_time) >= images[tag][:2]:
                    images[tag] = (e.step, e.wall_time, e.encoded_image_string)
        for tag in tags.get("tensors", []):
            if not tag.endswith("/text_summary"):
                continue
            name = tag.removesuffix("/text_summary")
            for e in acc.Tensors(tag):
                if e.tensor_proto.string_val and (name not in texts or (e.step, e.wall_time) >= texts[name][:2]):
                    texts[name] = (e.step, e.wall_time, e.tensor_proto.string_val[0].decode("utf-8", "replace"))
    logs.scalars = {t: [(s, v) for s, _, v in sorted(rows)] for t, rows in scalars.items()}
    logs.images = {t: (s, b) for t, (s, _, b) in images.items()}
    logs.texts = {t: text for t, (_, _, text) in texts.items()}
    return logs


def _group(tag: str) -> str:
    parts = tag.split("/")
    return parts[1] if parts[0] == "xai" and len(parts) > 2 else "training"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _embed_image(data: bytes, max_side: int, max_png_bytes: int) -> tuple[str, int, int]:
    """A data URI for a logged image: as logged, or downscaled to ``max_side`` pixels on its long side,
    and JPEG (quality 85) when its PNG is over ``max_png_bytes`` and the JPEG is smaller."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    width, height = img.size
    changed = False
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        img = img.convert("RGB").resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.LANCZOS)
        width, height = img.size
        changed = True
    if changed:
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    mime = "image/png" if (img.format or "PNG") == "PNG" or changed else f"image/{img.format.lower()}"
    if len(data) > max_png_bytes:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
        if len(buf.getvalue()) < len(data):
            data, mime = buf.getvalue(), "image/jpeg"
    return _data_uri(data, mime), width, height


def _plot(title: str, series: dict[str, list[tuple[int, float]]]) -> str:
    """A small PNG line plot (matplotlib, Agg) of ``series`` over the training step, as a data URI."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.4, 2.3), dpi=80)
    ax = fig.add_subplot()
    for label, points in series.items():
        xs = [s for s, _ in points]
        ys = [v for _, v in points]
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.2, label=label)
    ax.set_title(title if len(title) <= 48 else "..." + title[-45:], fontsize=8)
    ax.set_xlabel("step", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if len(series) > 1:  # beside the axes, so it hides no curve
        ax.legend(fontsize=6, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return _data_uri(buf.getvalue(), "image/png")


def _markdown_table(text: str) -> dict[str, Any] | None:
    """Parse a markdown pipe table (as the TensorBoard sink writes one) into a header, rows and notes."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    table = [line for line in lines if line.startswith("|")]
    if len(table) < 2:
        return None

    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    notes = [line.strip() for line in lines if not line.startswith("|")]
    return {"header": cells(table[0]), "rows": [cells(line) for line in table[2:]], "notes": " ".join(notes)}


def build_report(
    log_dir: str | Path,
    path: str | Path,
    title: str | None = None,
    max_image_side: int = 1400,
    max_png_bytes: int = 400_000,
    max_plots_per_section: int = 60,
) -> Path:
    """Write one self-contained HTML page of a run's logged explanations.

    Sections, each present when its monitor logged something: the shortcut alarms (``xai/shortcut/``)
    first, then the training metrics, then one per monitor group in a fixed order (saliency, TCAV,
    TracIn, quality metrics, sanity checks, prototypes, dissection; then any other ``xai/<group>``,
    shown the same generic way). A section holds the group's scalar curves (one small plot per tag's
    parent path, over the training step), the last image of each of its image tags with its caption,
    and its tables. Images are embedded as base64 data URIs as logged; one longer than
    ``max_image_side`` pixels is downscaled, one whose PNG is over ``max_png_bytes`` is JPEG-encoded
    (quality 85) when that is smaller. No script, no external reference.

    Cost: reading the event files (:func:`read_event_files`) and one matplotlib figure per plot.

    Args:
        log_dir: The run's TensorBoard directory.
        path: The HTML file to write (its folder is created).
        title: The page title; default ``"lightning-xai report: <log_dir's last two parts>"``.
        max_image_side: Longest image side kept, in pixels.
        max_png_bytes: PNG size above which an image is JPEG-encoded.
        max_plots_per_section: Plots per section; the rest are counted in a note.

    Returns:
        The path written.
    """
    import jinja2

    log_dir = Path(log_dir)
    logs = read_event_files(log_dir)
    groups: dict[str, dict[str, Any]] = {}

    def section(group: str) -> dict[str, Any]:
        if group not in groups:
            groups[group] = {
                "id": f"xai-{group}",
                "group": group,
                "title": TITLES.get(group, f"xai/{group}"),
                "plots": [],
                "images": [],
                "strips": [],
                "tables": [],
                "omitted_plots": 0,
            }
        return groups[group]

    # curves: one plot per parent path of an xai tag; one per training metric
    by_parent: dict[tuple[str, str], dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for tag in sorted(logs.scalars):
        if tag in _LIGHTNING_OWN:
            continue
        group = _group(tag)
        parent, _, leaf = tag.rpartition("/")
        # xai/<group>/<name>/<leaf>: one plot per <name>; a training metric or xai/<group>/<leaf>: its own plot
        key = (group, tag) if group == "training" or parent.count("/") < 2 else (group, parent)
        by_parent[key][leaf if key[1] != tag else tag] = logs.scalars[tag]
    for (group, name), series in by_parent.items():
        sec = section(group)
        if len(sec["plots"]) >= max_plots_per_section:
            sec["omitted_plots"] += 1
            continue
        short = name.removeprefix(f"xai/{group}/") if group != "training" else name
        sec["plots"].append({"title": name, "uri": _plot(short or name, series)})

    captions = {t.removesuffix("/caption"): text for t, text in logs.texts.items() if t.endswith("/caption")}
    for tag in sorted(logs.images):
        step, data = logs.images[tag]
        uri, width, height = _embed_image(data, max_image_side, max_png_bytes)
        section(_group(tag))["strips" if _PER_PROBE.search(tag) else "images"].append(
            {"tag": tag, "step": step, "uri": uri, "width": width, "height": height, "caption": captions.get(tag, "")}
        )
    for tag in sorted(logs.texts):
        if tag.endswith("/caption"):
            continue
        table = _markdown_table(logs.texts[tag])
        if table is not None:
            section(_group(tag))["tables"].append({"tag": tag, **table})
        else:
            section(_group(tag))["tables"].append({"tag": tag, "header": [], "rows": [], "notes": logs.texts[tag]})

    order = {g: i for i, g in enumerate(GROUP_ORDER)}
    sections = sorted(groups.values(), key=lambda s: (order.get(s["group"], len(order)), s["group"]))
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lightning_xai.callbacks", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template("report.html.j2").render(
        title=title or f"lightning-xai report: {'/'.join(log_dir.resolve().parts[-2:])}",
        sections=sections,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


class XAIReport(Callback):
    """Write one self-contained HTML report of every attached monitor's results at the end of fit.

    At ``on_fit_end`` it waits for every :class:`~lightning_xai.callbacks.MonitorBase`'s background
    writer (``flush()``), flushes the TensorBoard logger, then reads the run's event files back and
    writes the page with :func:`build_report` (the same page ``lightning-xai report LOG_DIR`` builds
    from the same logs). It computes no explanation itself and never touches the model. Every rank
    flushes; rank zero alone writes. Cost: reading the event files once, plus one small matplotlib
    plot per scalar group, at the end of fit only.

    Args:
        path: The HTML file; default ``<trainer.log_dir>/xai_report.html`` (the first logger's
            directory: the TensorBoard run directory when that logger comes first). Relative paths are relative to the working directory.
        title: The page title (see :func:`build_report`).

    Raises:
        ValueError: At ``setup``, when the Trainer has no ``TensorBoardLogger`` (the report is built
            from TensorBoard event files).

    Example:
        >>> from lightning_xai.callbacks import XAIReport, SaliencyMonitor
        >>> callbacks = [SaliencyMonitor(["grad_cam"]), XAIReport()]
    """

    def __init__(self, path: str | Path | None = None, title: str | None = None) -> None:
        if path is not None and not isinstance(path, (str, Path)):
            raise TypeError(f"Expected argument `path` to be a str or Path, but got {type(path).__name__}.")
        self.path = None if path is None else Path(path)
        self.title = title
        self.report_path: Path | None = None

    @staticmethod
    def _tensorboard(trainer: pl.Trainer) -> TensorBoardLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._tensorboard(trainer) is None:
            raise ValueError(
                "XAIReport builds its page from TensorBoard event files, but the Trainer has no "
                f"TensorBoardLogger (loggers: {[type(lg).__name__ for lg in trainer.loggers]})."
            )

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from lightning_xai.callbacks.base import MonitorBase

        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, MonitorBase):
                callback.flush()
        for logger in trainer.loggers:
            logger.save()
        tensorboard = self._tensorboard(trainer)
        log_dir = trainer.log_dir  # a broadcast under DDP: every rank must ask
        if not trainer.is_global_zero or tensorboard is None:
            return
        tensorboard.experiment.flush()
        path = self.path or Path(log_dir or tensorboard.log_dir) / "xai_report.html"
        self.report_path = build_report(tensorboard.log_dir, path, title=self.title)
