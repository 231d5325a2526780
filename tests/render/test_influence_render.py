"""Influence pictures: shapes, captions' effect, bad input."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.render.influence import class_name, proponents_grid, self_influence_grid


def test_self_influence_grid_shape_and_content() -> None:
    images = torch.zeros(4, 1, 8, 8)
    images[0, 0, 2:6, 2:6] = 1.0
    grid = self_influence_grid(images, torch.tensor([0, 1, 2, 3]), torch.rand(4), torch.arange(4), ncols=2)
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1
    assert (grid < 0.5).any(), "captions and dark pixels are drawn"
    named = self_influence_grid(
        images,
        torch.tensor([0, 1, 2, 3]),
        torch.rand(4),
        torch.arange(4),
        class_names=["zero", "one", "two", "three"],
        predictions=torch.tensor([1, 1, 2, 0]),
    )
    assert named.shape[1] > grid.shape[1] // 2
    with pytest.raises(ValueError, match="one label"):
        self_influence_grid(images, torch.tensor([0, 1]), torch.rand(4), torch.arange(4))


def test_proponents_grid_two_rows_and_uneven_k() -> None:
    probe = torch.rand(3, 8, 8)
    grid = proponents_grid(
        probe,
        1,
        torch.rand(3, 3, 8, 8),
        torch.tensor([1, 1, 2]),
        torch.tensor([0.5, 0.2, 0.1]),
        torch.rand(2, 3, 8, 8),
        torch.tensor([0, 2]),
        torch.tensor([-0.3, -0.1]),
    )
    one_row = proponents_grid(
        probe,
        1,
        torch.rand(3, 3, 8, 8),
        torch.tensor([1, 1, 2]),
        torch.rand(3),
        torch.rand(0, 3, 8, 8),
        torch.zeros(0, dtype=torch.long),
        torch.zeros(0),
    )
    assert grid.shape == one_row.shape  # the grid layout does not depend on how many opponents exist
    assert grid.shape[2] > grid.shape[1] // 2
    with pytest.raises(ValueError, match="probe_image"):
        proponents_grid(
            probe[None],
            1,
            torch.rand(1, 3, 8, 8),
            torch.tensor([1]),
            torch.rand(1),
            torch.rand(1, 3, 8, 8),
            torch.tensor([1]),
            torch.rand(1),
        )


def test_class_name() -> None:
    assert class_name(1, ["a", "b"]) == "b"
    assert class_name(5, ["a", "b"]) == "5"
    assert class_name(2, None) == "2"
