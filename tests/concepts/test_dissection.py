"""Network Dissection: the exact detector unit gets its concept with IoU 1; the streamed quantile
equals the exact one over all activations; shards merge to the single-process result."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lightning_xai.concepts import NetworkDissection
from lightning_xai.concepts.dissection import merge_top
from lightning_xai.concepts.functional import layer_activations
from tests.helpers.concept_models import DetectorNet, background, with_patches

LAYER = "features.1"


@pytest.fixture(scope="module")
def patched():
    images, masks = with_patches(background(40, 0), 1)
    return images, masks


def test_detector_unit_gets_its_concept_with_iou_one(patched):
    images, masks = patched
    model = DetectorNet()
    noise = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0)) > 0.5
    result = NetworkDissection(LAYER, quantile=0.01, batch_size=16)(model, images, {"red": masks, "noise": noise})
    assert result.concepts == ["red", "noise"]
    assert result.best_concept[0] == 0 and result.iou[0, 0] == pytest.approx(1.0)
    assert result.interpretable[0] and result.units("red")[0] == 0
    assert result.iou[3].eq(0).all() and math.isinf(result.thresholds[3])  # the dead unit is never active
    assert result.detectors()["red"] >= 1


def test_iou_matches_a_literal_computation(patched):
    images, masks = patched
    model = DetectorNet()
    q = 0.05
    result = NetworkDissection(LAYER, quantile=q, batch_size=7)(model, images, {"red": masks})
    acts = layer_activations(model, images, LAYER, flatten=False)[LAYER]
    k = acts.shape[1]
    values = acts.transpose(0, 1).reshape(k, -1)
    m = math.ceil(q * values.shape[1])
    top = values.sort(dim=1, descending=True).values[:, m - 1]
    constant = values.min(dim=1).values == top
    for unit in range(k):
        if constant[unit]:
            assert result.iou[unit, 0] == 0
            continue
        assert result.thresholds[unit] == top[unit]
        up = F.interpolate(acts[:, unit : unit + 1], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
        active = up >= top[unit]
        inter = (active & masks).sum().item()
        union = (active | masks).sum().item()
        assert result.iou[unit, 0].item() == pytest.approx(inter / union)


def test_streamed_quantile_is_exact_and_shards_merge():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.Tanh())
    images = torch.randn(30, 3, 8, 8)
    dis = NetworkDissection("1", quantile=0.02, batch_size=4)
    full = dis.top_values(model, images)
    values = layer_activations(model, images, "1", flatten=False)["1"].transpose(0, 1).reshape(5, -1)
    m = math.ceil(0.02 * values.shape[1])
    torch.testing.assert_close(full[:, :-1], values.sort(dim=1, descending=True).values[:, :m], rtol=0, atol=0)
    shards = [dis.top_values(model, images, total_images=30, indices=torch.arange(r, 30, 2)) for r in range(2)]
    assert torch.equal(merge_top(shards, m), full)


def test_bad_input(patched):
    images, masks = patched
    model = DetectorNet()
    with pytest.raises(ValueError, match="no layer named 'features.7'"):
        NetworkDissection("features.7")(model, images, {"red": masks})
    with pytest.raises(ValueError, match="40 images but masks for 3"):
        NetworkDissection(LAYER)(model, images, {"red": masks[:3]})
    with pytest.raises(ValueError, match="`quantile`"):
        NetworkDissection(LAYER, quantile=0.0)
    with pytest.raises(ValueError, match=r"cannot run on images of shape \[.*, 1, 16, 16\]"):
        NetworkDissection(LAYER)(model, images[:, :1], {"red": masks})
    from lightning_xai.errors import LightningXAIError

    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    with pytest.raises(LightningXAIError, match=r"\[B, K, h, w\]"):
        NetworkDissection("1")(flat, images, {"red": masks})


def _counts_before(dis, model, images, masks, thresholds):
    """The former ``counts``: dense float [b, K, H*W] and [b, C, H*W] per batch, one einsum."""
    inter = unit_area = concept_area = None
    for part, act in dis._maps(model, images):
        mask = masks[part]
        up = F.interpolate(act, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        active = (up >= thresholds.view(1, -1, 1, 1)).flatten(2).float()
        concept = mask.flatten(2).float()
        batch = torch.einsum("bkp,bcp->kc", active, concept)
        if inter is None:
            inter, unit_area, concept_area = batch, active.sum((0, 2)), concept.sum((0, 2))
        else:
            inter, unit_area, concept_area = (
                inter + batch,
                unit_area + active.sum((0, 2)),
                concept_area + concept.sum((0, 2)),
            )
    return inter, unit_area, concept_area


@pytest.mark.parametrize("chunk_bytes", [None, 4096])
def test_streamed_counts_equal_the_former_dense_counts(chunk_bytes, monkeypatch):
    from lightning_xai.concepts import dissection as module
    from lightning_xai.concepts.dissection import OwnedMasks

    if chunk_bytes is not None:  # force several chunks of units per batch
        monkeypatch.setattr(module, "COUNT_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, stride=2, padding=1), torch.nn.ReLU())
    images = torch.rand(24, 3, 12, 12)
    owner = torch.arange(24) % 3
    own = torch.rand(24, 12, 12) > 0.6
    owned = OwnedMasks(own, owner, 3)
    dense = owned.dense()
    assert dense.sum() == own.sum() and dense[torch.arange(24), owner].equal(own)
    dis = NetworkDissection("1", quantile=0.05, batch_size=5)
    thresholds = dis.thresholds(model, images)
    expected = _counts_before(dis, model, images, dense, thresholds)
    for masks in (dense, owned):
        got = dis.counts(model, images, masks, thresholds)
        for a, b in zip(got, expected):  # integer counts below 2^24: exact in float32 on both sides
            assert torch.equal(a, b)
    old = NetworkDissection.iou(*expected)
    assert torch.equal(dis(model, images, dense, names=["a", "b", "c"]).iou, old)
    assert old.max() > 0  # a non-trivial case
