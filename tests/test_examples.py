"""The examples run (on scikit-learn's digits: real data that ships with scikit-learn)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.examples import load_example


def test_explain_digits_writes_the_method_grid(tmp_path: Path) -> None:
    out = load_example("explain_digits").main(["--epochs", "2", "--num-images", "2", "--out", str(tmp_path / "d.png")])
    assert out.stat().st_size > 5000


def test_monitor_example_falls_back_to_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_example("monitor_fashion_mnist")
    monkeypatch.setattr(module, "FASHION_DIR", tmp_path / "absent")
    module.main(["--epochs", "1", "--limit", "256", "--log-dir", str(tmp_path / "logs")])
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))
