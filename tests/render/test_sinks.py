import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.logger import DummyLogger

from lightning_xai.sinks.loggers import (
    FileSink,
    Sink,
    TensorBoardSink,
    WandbSink,
    check_loggers,
    sinks_for,
)

IMAGE = torch.linspace(0, 1, 3 * 20 * 24).view(3, 20, 24)
TABLE_COLUMNS = ["input", "score", "label"]


def _table_rows():
    return [[IMAGE, 0.25, "circle"], [IMAGE.flip(2), torch.tensor(0.5), "square"]]


def _log_everything(sink: Sink, steps=(0, 7)) -> None:
    for step in steps:
        sink.log_image("xai/saliency", IMAGE, step, caption="true: circle\npred: square (0.93)")
        sink.log_scalars({"xai/pointing_game": 0.5 + step, "xai/energy": 1}, step)
        sink.log_histogram("xai/attr_hist", torch.randn(200), step)
        sink.log_text("xai/notes", "hello\nworld", step)
        sink.log_table("xai/table", TABLE_COLUMNS, _table_rows(), step)
    sink.flush()


def test_sinks_for_picks_one_sink_per_logger(tmp_path):
    loggers = [
        TensorBoardLogger(tmp_path / "tb"),
        WandbLogger(save_dir=tmp_path, offline=True),
        CSVLogger(tmp_path / "csv"),
        DummyLogger(),
    ]
    sinks = sinks_for(loggers)
    assert [type(s) for s in sinks] == [TensorBoardSink, WandbSink, FileSink]
    assert sinks_for([]) == []


def test_tensorboard_sink_round_trip(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version=0)
    sink = TensorBoardSink(logger)
    _log_everything(sink)
    sink.log_embedding("cavs", torch.randn(4, 6), 7, labels=["a", "b", "c", "d"], images=torch.rand(4, 3, 8, 8))
    logger.finalize("success")
    projector = (tmp_path / "tb" / "version_0" / "projector_config.pbtxt").read_text()
    assert "cavs" in projector and "metadata.tsv" in projector and "sprite.png" in projector
    with pytest.raises(ValueError, match=r"\[N, D\].*\(6,\)"):
        sink.log_embedding("bad", torch.randn(6), 0)
    acc = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"xai/saliency", "xai/table"} <= set(tags["images"])
    images = acc.Images("xai/saliency")
    assert [e.step for e in images] == [0, 7]
    assert (images[0].width, images[0].height) == (24, 20)
    assert {"xai/pointing_game", "xai/energy"} <= set(tags["scalars"])
    assert [(e.step, e.value) for e in acc.Scalars("xai/pointing_game")] == [(0, 0.5), (7, 7.5)]
    assert "xai/attr_hist" in tags["histograms"]
    assert acc.Histograms("xai/attr_hist")[0].histogram_value.num == 200
    assert {"xai/notes/text_summary", "xai/saliency/caption/text_summary", "xai/table/text_summary"} <= set(
        tags["tensors"]
    )
    text = acc.Tensors("xai/notes/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "hello" in text and "world" in text
    table = acc.Tensors("xai/table/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| score | label |" in table and "circle" in table and "[image]" not in table
    assert "`xai/table`" in table  # the text names the labelled picture
    picture = acc.Images("xai/table")[0]  # one labelled picture: header row + one row per entry
    assert picture.width >= 3 * 112 and picture.height > 2 * 128


def test_wandb_sink_offline_files(tmp_path, monkeypatch):
    for name in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")  # restored at teardown (WandbLogger overwrites it)
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=tmp_path, offline=True)
    sink = WandbSink(logger)
    try:
        logger.log_metrics({"train_loss": 1.0}, step=0)  # Lightning's own logging, interleaved
        _log_everything(sink)
        logger.log_metrics({"train_loss": 0.5}, step=8)
    finally:
        logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    pngs = sorted((media / "images" / "xai").glob("saliency_*.png"))
    assert len(pngs) == 2
    assert np.asarray(Image.open(pngs[0]).convert("RGB")).shape == (20, 24, 3)
    assert len(list((media / "table" / "xai").glob("table_*.table.json"))) == 2
    assert len(list((media / "html" / "xai").glob("notes_*.html"))) == 2


def test_wandb_sink_steps_go_through_log_metrics():
    """Every payload reaches W&B through ``WandbLogger.log_metrics(payload, step)``, which adds
    ``trainer/global_step``: the same x-axis as Lightning's own metrics, and no explicit W&B step."""
    import wandb

    calls = []

    class Recorder(WandbLogger):
        def log_metrics(self, metrics, step=None):
            calls.append((dict(metrics), step))

    sink = WandbSink(Recorder(offline=True))
    sink.log_image("xai/a", IMAGE, 3, caption="cap")
    sink.log_scalars({"xai/s": 2}, 4)
    sink.log_histogram("xai/h", torch.randn(10), 5)
    sink.log_text("xai/t", "<b>", 6)
    sink.log_table("xai/tab", TABLE_COLUMNS, _table_rows(), 7)
    assert [step for _, step in calls] == [3, 4, 5, 6, 7]
    image = calls[0][0]["xai/a"]
    assert isinstance(image, wandb.Image) and image._caption == "cap"
    assert calls[1][0] == {"xai/s": 2.0}
    assert isinstance(calls[2][0]["xai/h"], wandb.Histogram)
    assert "&lt;b&gt;" in calls[3][0]["xai/t"].html
    table = calls[4][0]["xai/tab"]
    assert isinstance(table, wandb.Table) and table.columns == TABLE_COLUMNS
    assert isinstance(table.data[0][0], wandb.Image) and table.data[1][1] == 0.5


def test_file_sink_with_csv_logger(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version=0)
    logger.log_hyperparams({"lr": 0.1})  # like the Trainer: the experiment exists before we write
    _log_everything(FileSink(logger))
    root = tmp_path / "csv" / "version_0"
    for step in (0, 7):
        png = root / "xai" / "saliency" / f"step_{step}.png"
        assert np.asarray(Image.open(png).convert("RGB")).shape == (20, 24, 3)
        assert (png.with_suffix(".txt")).read_text() == "true: circle\npred: square (0.93)"
        assert (root / "xai" / "notes" / f"step_{step}.txt").read_text() == "hello\nworld"
        with (root / "xai" / "attr_hist" / f"step_{step}.hist.csv").open() as f:
            assert sum(int(r["count"]) for r in csv.DictReader(f)) == 200
        table = root / "xai" / "table" / f"step_{step}.csv"
        with table.open() as f:
            rows = list(csv.DictReader(f))
        assert [r["label"] for r in rows] == ["circle", "square"] and float(rows[1]["score"]) == 0.5
        assert (table.parent / rows[0]["input"]).is_file()
    with (root / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    assert [int(r["step"]) for r in metrics] == [0, 7]
    assert [float(r["xai/pointing_game"]) for r in metrics] == [0.5, 7.5]


def test_file_sink_explicit_root_and_safe_paths(tmp_path):
    logger = CSVLogger(tmp_path)
    sink = FileSink(logger, root=tmp_path / "out")
    sink.log_image("../weird tag/x:y", IMAGE, 2)
    assert (tmp_path / "out" / "weird_tag" / "x_y" / "step_2.png").is_file()


@pytest.mark.parametrize("sink_type", [TensorBoardSink, FileSink])
def test_bad_images_and_tables(tmp_path, sink_type):
    logger = TensorBoardLogger(tmp_path) if sink_type is TensorBoardSink else CSVLogger(tmp_path)
    sink = sink_type(logger)
    with pytest.raises(ValueError, match=r"\[3, H, W\].*\(20, 24\)"):
        sink.log_image("x", IMAGE[0], 0)
    with pytest.raises(TypeError, match="ndarray"):
        sink.log_image("x", IMAGE.numpy(), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="row 1 has 2"):
        sink.log_table("t", TABLE_COLUMNS, [[IMAGE, 1, "a"], [IMAGE, 1]], 0)


def test_check_loggers(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="TensorBoardLogger"):
        check_loggers([])
    check_loggers([TensorBoardLogger(tmp_path), CSVLogger(tmp_path)])
    wandb_logger = WandbLogger(save_dir=tmp_path, offline=True)
    check_loggers([wandb_logger])
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "lightning-xai\[wandb\]"'):
        check_loggers([TensorBoardLogger(tmp_path), wandb_logger])
    check_loggers([TensorBoardLogger(tmp_path)])  # fine without wandb when W&B is not used


def test_fast_tensorboard_crc_is_identical_and_opt_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
    from tensorboard.summary.writer import record_writer

    from lightning_xai.sinks.loggers import _fast_masked_crc32c, use_fast_tensorboard_crc

    for size in (0, 1, 7, 100, 4096, 100_003):
        data = os.urandom(size)
        assert _fast_masked_crc32c(data) == masked_crc32c(data)
    monkeypatch.setattr(record_writer, "masked_crc32c", masked_crc32c)
    # opt-in only: creating sinks never patches TensorBoard
    TensorBoardSink(TensorBoardLogger(str(tmp_path)))
    assert record_writer.masked_crc32c is masked_crc32c
    assert use_fast_tensorboard_crc() and record_writer.masked_crc32c is _fast_masked_crc32c
    assert use_fast_tensorboard_crc()  # idempotent: the original is remembered once
    assert not use_fast_tensorboard_crc(False) and record_writer.masked_crc32c is masked_crc32c
