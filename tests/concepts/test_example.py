"""examples/tcav_shortcut.py runs (tiny settings) and writes its picture."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.examples import load_example

pytestmark = pytest.mark.slow  # 7-14 s on a shared 2-core machine


def test_tcav_shortcut_example_writes_the_picture(tmp_path: Path) -> None:
    module = load_example("tcav_shortcut")
    out = tmp_path / "t.png"
    result = module.main(
        [
            "--epochs",
            "1",
            "--num-train",
            "128",
            "--image-size",
            "16",
            "--n-random",
            "2",
            "--every-n-train-steps",
            "1",
            "--log-dir",
            str(tmp_path / "logs"),
            "--out",
            str(out),
        ]
    )
    assert out.stat().st_size > 5000
    assert len(result["steps"]) == 2 and set(result["tcav"]) == {
        "TCAV(marker_square -> square)",
        "TCAV(square -> square)",
    }
