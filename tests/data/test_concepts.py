"""Concept sets of the shapes data: right shapes, colours and marker placement, masks that match."""

from __future__ import annotations

import pytest
import torch

from lightning_xai.data import MARKER_COLORS, ShapesDataset, concept_sets, dissection_masks, random_images
from lightning_xai.data.concepts import CONCEPT_COLORS


def test_concept_sets_show_their_concept():
    sets = concept_sets(8, image_size=24, num_classes=4, noise=0.0)
    assert set(sets) == {
        "square",
        "circle",
        "triangle",
        "cross",
        *CONCEPT_COLORS,
        *(f"marker_{s}" for s in ("square", "circle", "triangle", "cross")),
    }
    for name, cs in sets.items():
        assert cs.images.shape == (8, 3, 24, 24) and cs.masks.shape == (8, 1, 24, 24) and len(cs) == 8
        assert cs.masks.sum((1, 2, 3)).gt(0).all(), name
    red = sets["red"]
    inside = red.images.permute(0, 2, 3, 1)[red.masks[:, 0].bool()]
    torch.testing.assert_close(inside, torch.tensor(CONCEPT_COLORS["red"]).expand_as(inside))


def test_marker_concept_matches_the_datasets_marker():
    ds = ShapesDataset(40, image_size=24, num_classes=4, shortcut=True, noise=0.0)
    sets = concept_sets(4, image_size=24, num_classes=4, noise=0.0, concepts=[f"marker_{c}" for c in ds.classes])
    for label, name in enumerate(ds.classes):
        cs = sets[f"marker_{name}"]
        reference = ds.marker_masks[ds.labels == label][0]
        assert torch.equal(cs.masks[0], reference)
        pixels = cs.images[0].permute(1, 2, 0)[reference[0].bool()]
        torch.testing.assert_close(pixels, torch.tensor(MARKER_COLORS[label]).expand_as(pixels))


def test_shape_concepts_are_that_shape_and_dataset_api_unchanged():
    sets = concept_sets(5, image_size=16, num_classes=3, concepts=["triangle"])
    ref = ShapesDataset(15, image_size=16, num_classes=3, seed=100 + 1000 * 3)
    torch.testing.assert_close(sets["triangle"].images, ref.images[ref.labels == 2][:5])
    assert random_images(4, image_size=16).shape == (4, 3, 16, 16)
    masks = dissection_masks(ShapesDataset(12, image_size=16, num_classes=3, shortcut=True))
    assert set(masks) == {"square", "circle", "triangle", "marker"}


def test_unknown_concept():
    with pytest.raises(ValueError, match="Unknown concept 'hexagon'"):
        concept_sets(4, concepts=["hexagon"])
