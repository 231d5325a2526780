"""Names that moved keep working from their old path for one release, or say where they went."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("lightning_xai.render.sinks", "lightning_xai.sinks.loggers", "sinks_for"),
        ("lightning_xai.render.sinks", "lightning_xai.sinks.loggers", "TensorBoardSink"),
        ("lightning_xai.render.writer", "lightning_xai.sinks.writer", "BackgroundWriter"),
        ("lightning_xai.render", "lightning_xai.sinks", "Sink"),
    ],
)
def test_a_moved_sink_name_still_resolves_with_a_warning(old: str, new: str, name: str):
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        found = getattr(module, name)
    assert found is getattr(importlib.import_module(new), name)


def test_an_unknown_name_on_a_shim_is_an_attribute_error():
    import lightning_xai.render.sinks as shim

    with pytest.raises(AttributeError, match="no_such_name"):
        shim.no_such_name  # noqa: B018


def test_drawing_does_not_import_the_logging_layer():
    code = "import sys, lightning_xai.render; print('lightning_xai.sinks' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_demo_monitor_left_the_callbacks_and_says_where_it_went():
    from lightning_xai.demo import tcav_demo_monitor

    assert callable(tcav_demo_monitor)
    with pytest.raises(ImportError, match=r"lightning_xai\.demo\.tcav_demo_monitor"):
        from lightning_xai.callbacks.tcav import tcav_demo_monitor  # noqa: F401, F811
