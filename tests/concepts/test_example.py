"""examples/tcav_shortcut.py runs (tiny settings) and writes its picture."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tcav_shortcut.py"


def test_tcav_shortcut_example_writes_the_picture(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("tcav_shortcut", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
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
            "--every-n-steps",
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
