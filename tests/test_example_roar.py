"""examples/roar_digits.py runs end to end on a tiny configuration and writes the README figure."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "roar_digits.py"


def test_roar_digits_example_writes_the_curve(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("roar_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.main([
        "--epochs", "3", "--fractions", "0.3", "0.7", "--fills", "background", "mean",
        "--num-train", "400", "--docs", str(tmp_path / "docs"),
    ])  # fmt: skip
    assert (tmp_path / "docs" / "roar_curve.png").stat().st_size > 5000
    assert summary["base_accuracy"] > 0.5
    assert set(summary["curves"]) == {"background", "mean"}
    for curve in summary["curves"].values():
        assert len(curve["ig"]) == len(curve["random"]) == 2
        assert all(0.0 <= a <= 1.0 for a in curve["ig"] + curve["random"])
