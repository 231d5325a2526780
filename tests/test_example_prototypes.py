"""The prototype example runs end to end on a tiny budget (the numbers need the full run)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.examples import load_example


def test_prototype_example_runs_and_writes_pictures(tmp_path: Path) -> None:
    module = load_example("prototypes_shapes")
    argv = [
        "--num-train",
        "96",
        "--num-val",
        "32",
        "--pretrain-epochs",
        "1",
        "--epochs",
        "2",
        "--last-layer-epochs",
        "1",
    ]
    results = module.main([*argv, "--log-dir", str(tmp_path / "logs"), "--docs", str(tmp_path / "docs")])
    assert 0.0 <= results["prototype_acc"] <= 1.0 and 0.0 <= results["linear_acc"] <= 1.0
    assert results["prototype_validated_val_acc"] == results["prototype_last_logged_val_acc"]  # ends validated
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == [
        "prototypes_gallery.png",
        "prototypes_this_looks_like_that_0.png",
        "prototypes_this_looks_like_that_2.png",
    ]
