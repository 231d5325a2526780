"""Smoke test of examples/tracin_mislabels.py (two epochs, one seed)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.examples import load_example


def test_mislabel_example_writes_its_curve(tmp_path: Path) -> None:
    module = load_example("tracin_mislabels")
    out = tmp_path / "curve.png"
    curves = module.main(
        ["--epochs", "2", "--every", "1", "--seeds", "1", "--out", str(out), "--logdir", str(tmp_path)]
    )
    assert out.stat().st_size > 1000
    assert set(curves) == {"TracIn self-influence", "TracIn, last checkpoint only", "loss of the final model", "random"}
    for values in curves.values():
        assert values.shape == (1, 5) and (values >= 0).all() and (values <= 1).all()
        assert (values[0, 1:] >= values[0, :-1]).all(), "inspecting more finds more"
    assert list(tmp_path.rglob("events.out.tfevents.*")), "the monitor logged"
