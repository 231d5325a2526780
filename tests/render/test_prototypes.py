"""Prototype pictures: boxes drawn where asked, crops hold the box's pixels, figure shapes."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.render import crop_patches, draw_boxes, prototype_gallery, this_looks_like_that


def test_draw_boxes_outlines_only_the_box() -> None:
    images = torch.zeros(2, 3, 10, 12)
    boxes = torch.tensor([[2, 3, 6, 9], [0, 0, 10, 12]])
    out = draw_boxes(images, boxes, color=(1.0, 0.0, 0.0))
    edge = out[:, 0] == 1.0
    expected = torch.zeros(2, 10, 12, dtype=torch.bool)
    expected[0, 2, 3:9] = expected[0, 5, 3:9] = True
    expected[0, 2:6, 3] = expected[0, 2:6, 8] = True
    expected[1, 0, :] = expected[1, 9, :] = expected[1, :, 0] = expected[1, :, 11] = True
    assert torch.equal(edge, expected)
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        draw_boxes(images, torch.zeros(2, 3))


def test_crop_patches_hold_the_box_pixels() -> None:
    images = torch.rand(1, 3, 8, 8)
    images[0, :, 0, 0], images[0, :, 7, 7] = 0.0, 1.0  # to_display leaves the image as it is
    crop = crop_patches(images, torch.tensor([[2, 4, 4, 8]]), size=(2, 4))
    torch.testing.assert_close(crop[0], images[0, :, 2:4, 4:8])


def test_figures_have_one_row_per_prototype() -> None:
    gallery = prototype_gallery(
        torch.rand(3, 3, 8, 8), torch.tensor([[0, 0, 4, 4]] * 3), torch.rand(3, 1, 2, 2), ["a", "b", "c"], ncols=1
    )
    two = prototype_gallery(
        torch.rand(2, 3, 8, 8), torch.tensor([[0, 0, 4, 4]] * 2), torch.rand(2, 1, 2, 2), ["a", "b"], ncols=1
    )
    assert gallery.shape[0] == 3 and gallery.shape[1] > two.shape[1] and gallery.shape[2] == two.shape[2]
    out = this_looks_like_that(
        torch.rand(1, 8, 8), torch.rand(2, 2, 2), torch.rand(2, 1, 16, 16), torch.tensor([[0, 0, 8, 8]] * 2), ["x", "y"]
    )
    assert out.shape[0] == 3 and 0 <= out.min() and out.max() <= 1
    with pytest.raises(ValueError, match="captions"):
        prototype_gallery(torch.rand(2, 3, 8, 8), torch.zeros(2, 4), torch.rand(2, 1, 2, 2), ["a"])
