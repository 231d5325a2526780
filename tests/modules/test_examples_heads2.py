"""The interpretable-heads examples run end to end on tiny settings."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.examples import load_example


def test_soft_tree_digits(tmp_path: Path) -> None:
    summary = load_example("soft_tree_digits").main(
        [
            "--depth",
            "2",
            "--epochs",
            "1",
            "--teacher-epochs",
            "1",
            "--log-dir",
            str(tmp_path / "logs"),
            "--out",
            str(tmp_path / "tree.png"),
        ]
    )
    assert set(summary) == {"teacher", "soft", "hard"} and 0 <= summary["soft"]["fidelity"] <= 1
    assert (tmp_path / "tree.png").stat().st_size > 5000
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))


def test_gates_shapes(tmp_path: Path) -> None:
    summary = load_example("gates_shapes").main(
        [
            "--epochs",
            "1",
            "--num-train",
            "128",
            "--num-val",
            "32",
            "--image-size",
            "16",
            "--width",
            "4",
            "--out",
            str(tmp_path / "gates.png"),
        ]
    )
    assert {"acc", "grad_cam_mask_share", "cam_pointing"} <= set(summary["gated"])
    assert (tmp_path / "gates.png").exists()


def test_masking_shapes(tmp_path: Path) -> None:
    summary = load_example("masking_shapes").main(
        [
            "--epochs",
            "1",
            "--mask-epochs",
            "1",
            "--num-train",
            "128",
            "--num-val",
            "32",
            "--image-size",
            "16",
            "--out",
            str(tmp_path / "masks.png"),
        ]
    )
    assert {"mask_share", "pointing", "ms_per_image"} <= set(summary["masking_model"])
    assert (tmp_path / "masks.png").exists()
