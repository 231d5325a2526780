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
        "marker_square -> square",
        "square -> square",
        "marker_square-vs-square -> square",
    }


def _fashion_example():
    return load_example("tcav_fashion_mnist")


def test_fashion_example_reads_idx_and_builds_concepts_from_real_digits(tmp_path: Path) -> None:
    """The example's logic on scikit-learn's real digits (no Fashion-MNIST needed): the idx reader
    round-trips, the texture statistic ranks a striped image above a plain one, and the concept sets
    are disjoint from each other and from the random pool."""
    import gzip

    import numpy as np
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    ex = _fashion_example()
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    with gzip.open(tmp_path / "x.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in array.shape) + array.tobytes())
    assert np.array_equal(ex.read_idx(tmp_path / "x.gz"), array)

    plain = torch.zeros(1, 1, 28, 28)
    plain[..., 6:22, 6:22] = 0.8
    striped = plain.clone()
    striped[..., 6:22:2, 6:22] = 0.3
    scores = ex.texture_score(torch.cat([plain, striped]))
    assert scores[0] == 0 and scores[1] > 0.5  # a plain square's interior has no Laplacian

    digits = load_digits()
    images = F.interpolate(torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0, size=(28, 28))
    labels = torch.tensor(digits.target)
    concepts, pool = ex.concept_sets(images, labels, 20)
    assert {k: v.shape[0] for k, v in concepts.items()} == {"sneaker": 20, "textured": 20, "plain": 20}
    assert pool.shape[0] == images.shape[0] - 60
    assert ex.texture_score(concepts["textured"]).min() >= ex.texture_score(concepts["plain"]).max()
    flat = torch.cat([*concepts.values(), pool]).flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == torch.unique(images.flatten(1), dim=0).shape[0]


def test_fashion_example_runs_on_synthetic_data(tmp_path: Path) -> None:
    ex = _fashion_example()
    out = tmp_path / "f.png"
    result = ex.main(
        [
            "--synthetic",
            "300",
            "--epochs",
            "1",
            "--num-train",
            "128",
            "--concept-size",
            "12",
            "--n-random",
            "2",
            "--num-samples",
            "6",
            "--log-dir",
            str(tmp_path / "logs"),
            "--out",
            str(out),
        ]
    )
    assert out.stat().st_size > 5000
    assert set(result["tcav"]) == {
        "sneaker -> Boot",
        "textured -> Shirt",
        "plain -> Shirt",
        "textured-vs-plain -> Shirt",
    }
    assert all(len(row["score"]) == 1 for row in result["tcav"].values())
