"""examples/roar_digits.py runs end to end on a tiny configuration and writes the README figure."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.examples import load_example


def test_roar_digits_example_writes_the_curve(tmp_path: Path) -> None:
    module = load_example("roar_digits")
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
