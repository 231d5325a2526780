"""examples/metrics_sanity.py runs end to end on a tiny configuration and writes both figures."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.examples import load_example


def test_metrics_sanity_example_writes_the_readme_figures(tmp_path: Path) -> None:
    module = load_example("metrics_sanity")
    summary = module.main([
        "--epochs", "2", "--num-train", "128", "--image-size", "16", "--probe", "4",
        "--log-dir", str(tmp_path / "logs"), "--docs", str(tmp_path / "docs"),
        "--retrain", "--retrain-epochs", "1",
    ])  # fmt: skip
    for name in ("metrics_curve.png", "sanity_randomization.png"):
        assert (tmp_path / "docs" / name).stat().st_size > 5000
    assert set(summary["pointing_game"]) == {"gradient", "grad_cam", "guided_backprop"}
    assert -1.0 <= summary["data_randomization/gradient"] <= 1.0
    assert "roar" not in summary  # ROAR has its own example (tests/test_example_roar.py)
