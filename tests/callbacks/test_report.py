"""XAIReport and ``lightning-xai report``: one self-contained HTML page from a run's TensorBoard logs."""

from __future__ import annotations

import re
import warnings
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lightning_xai.callbacks import MetricsMonitor, SaliencyMonitor, TCAVMonitor, XAIReport
from lightning_xai.callbacks.report import build_report
from lightning_xai.cli import main
from tests.helpers.data import tiny_concepts
from tests.helpers.training import fit


class _Page(HTMLParser):
    """Collects section ids, image sources and every src/href of a page; fails on unbalanced tags."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.refs: list[str] = []
        self.stack: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id") or "")
        if tag == "img":
            self.images.append(a.get("src") or "")
        if tag == "script":
            self.scripts += 1
        self.refs += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()


def parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.stack, f"unclosed tags: {page.stack}"
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny fit with three monitors and the report; returns the TensorBoard run dir and the report."""
    tmp_path = tmp_path_factory.mktemp("report")
    concepts = {k: v.images for k, v in tiny_concepts(6).items()}
    callbacks = [
        SaliencyMonitor(["grad_cam"], num_samples=3),
        MetricsMonitor(["saliency"], metrics=["pointing_game"], num_samples=3),
        TCAVMonitor(concepts, layers=["features.8"], target_classes=[0], n_random=2, num_samples=4),
        XAIReport(),
    ]
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, callbacks, logger=logger, max_epochs=2)
    report = callbacks[-1].report_path
    assert report == Path(logger.log_dir) / "xai_report.html"
    return Path(logger.log_dir), report


def test_the_report_parses_and_has_every_monitors_section(run: tuple[Path, Path]) -> None:
    _, report = run
    page = parse(report)
    assert page.sections == ["xai-training", "xai-saliency", "xai-tcav", "xai-metrics"]
    html = report.read_text()
    for tag in ("xai/saliency/grad_cam/overlays", "xai/saliency/grad_cam/evolution/00", "xai/tcav/features.8/summary"):
        assert tag in html
    assert all(src.startswith("data:image/") for src in page.images) and len(page.images) >= 6


def test_no_external_reference(run: tuple[Path, Path]) -> None:
    page = parse(run[1])
    assert page.scripts == 0
    external = [r for r in page.refs if not (r.startswith("data:") or r.startswith("#"))]
    assert not external, external
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", run[1].read_text())
    # the check catches one
    bad = run[1].parent / "bad.html"
    bad.write_text(run[1].read_text().replace("</main>", '<img src="https://example.com/x.png"></main>'))
    assert [r for r in parse(bad).refs if r.startswith("https://")]


def test_the_cli_builds_the_same_page_from_the_same_logs(run: tuple[Path, Path], tmp_path: Path) -> None:
    log_dir, report = run
    out = tmp_path / "cli.html"
    assert main(["report", str(log_dir), "-o", str(out)]) == 0
    assert parse(out).sections == parse(report).sections
    assert out.read_text() == report.read_text()  # same logs, same page (deterministic PNG plots)


def test_size_bound_downscales_and_jpeg_encodes(run: tuple[Path, Path], tmp_path: Path) -> None:
    log_dir, report = run
    assert report.stat().st_size < 2_000_000  # a tiny fit: far under the 20 MB the demo must keep to
    small = build_report(log_dir, tmp_path / "small.html", max_image_side=64, max_png_bytes=1)
    page = parse(small)
    assert small.stat().st_size < report.stat().st_size
    assert any(src.startswith("data:image/jpeg") for src in page.images)
    widths = [int(w) for w in re.findall(r'<img src="data:[^"]*" alt="xai/[^"]*" width="(\d+)"', small.read_text())]
    assert widths and max(widths) <= 64


def test_a_shortcut_group_comes_first_and_unknown_groups_are_shown(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    writer = logger.experiment
    for step in range(3):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
        writer.add_scalar("xai/shortcut/0", 0.2 * step, step)
        writer.add_scalar("xai/newthing/score", float(step), step)
    logger.finalize("success")
    page = parse(build_report(logger.log_dir, tmp_path / "r.html"))
    assert page.sections == ["xai-shortcut", "xai-training", "xai-newthing"]


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="No TensorBoard event file"):
        build_report(tmp_path, tmp_path / "r.html")
    assert main(["report", str(tmp_path)]) == 2
    with pytest.raises(TypeError, match="path"):
        XAIReport(path=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="TensorBoardLogger"):
        fit(tmp_path, [XAIReport()], logger=CSVLogger(str(tmp_path)), max_epochs=1)


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_spawn_writes_one_report_with_the_monitors_section(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(
            tmp_path,
            [SaliencyMonitor(["grad_cam"], num_samples=4), XAIReport()],
            logger=logger,
            max_epochs=1,
            strategy="ddp_spawn",
            devices=2,
        )
    reports = sorted(tmp_path.rglob("*.html"))
    # one page (rank zero), in the run's directory (the parent's logger would name a new version: not asked)
    assert len(reports) == 1 and reports[0].name == "xai_report.html", reports
    assert list(reports[0].parent.glob("events.out.tfevents.*"))
    assert "xai-saliency" in parse(reports[0]).sections
