"""examples/tracin_fashion_mnist.py: its pieces, and its main on scikit-learn's digits (no Fashion-MNIST)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.examples import load_example


@pytest.fixture(scope="module")
def example():
    return load_example("tracin_fashion_mnist")


def test_flip_labels_moves_exactly_a_tenth_to_another_class(example) -> None:
    y = torch.arange(1000) % 10
    noisy, flipped = example.flip_labels(y, seed=3)
    assert int(flipped.sum()) == 100
    assert bool((noisy[flipped] != y[flipped]).all())
    assert torch.equal(noisy[~flipped], y[~flipped])
    assert set(noisy[flipped].tolist()) == set(range(10))  # every class can receive a flip
    again, flipped_again = example.flip_labels(y, seed=3)
    assert torch.equal(again, noisy) and torch.equal(flipped_again, flipped)
    assert not torch.equal(example.flip_labels(y, seed=4)[1], flipped)


def test_found_counts_flips_in_the_top_share(example) -> None:
    flipped = torch.zeros(100, dtype=torch.bool)
    flipped[torch.arange(0, 100, 10)] = True
    assert example.found(flipped.double(), flipped, 0.1) == 1.0
    assert example.found(-flipped.double(), flipped, 0.2) == 0.0
    scores = torch.arange(100, 0, -1).double()  # ranks the examples 0..99 in order: 0 and 10 in the top 20
    assert example.found(scores, flipped, 0.2) == pytest.approx(0.2)


def test_read_idx_reads_the_idx_layout(example, tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], dtype=">u4").tobytes()
    path = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(header + images.tobytes())
    np.testing.assert_array_equal(example.read_idx(path), images)
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(bytes([0, 0, 0x0D, 1]) + np.array([1], dtype=">u4").tobytes() + b"\0\0\0\0")
    with pytest.raises(ValueError, match="0xd"):
        example.read_idx(bad)


def test_main_on_digits_finds_flips_and_keeps_training_identical(example, tmp_path: Path) -> None:
    """One seed on the 1,797 digits: fits with and without the monitor (bitwise-equal weights, checked by
    the script), the subset fits with the head and every layer, the picture and the numbers."""
    results = example.main([
        "--data", "digits", "--seeds", "0", "--epochs", "12", "--batch-size", "32", "--log-every", "12",
        "--subset", "300", "--subset-epochs", "3", "--top-examples", "8",
        "--picture", str(tmp_path / "top.png"), "--json", str(tmp_path / "r.json"), "--logdir", str(tmp_path),
    ])  # fmt: skip
    (result,) = results
    found = result["found"]
    assert set(found) == {"TracIn self-influence", "final loss", "random"}
    # 10% flipped: a random ranking finds about 10% / 20%; a ranking that sees the flips finds far more
    assert found["TracIn self-influence"][1] > 0.5
    assert found["final loss"][1] > 0.5
    assert found["random"][1] < 0.4
    assert 0.0 <= result["memorised"] <= 1.0
    assert result["seconds_without"] > 0 and result["seconds_with"] > 0
    assert set(result["subset"]) >= {"last_linear", "all", "memorised"}
    assert (tmp_path / "top.png").stat().st_size > 5000
    assert json.loads((tmp_path / "r.json").read_text())["results"][0]["seed"] == 0
