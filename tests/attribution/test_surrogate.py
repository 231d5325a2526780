"""Surrogate explainers: captum Lime / KernelShap as oracles on the same superpixels and coalitions;
exact Shapley values, Anchors' precision and XRAI's greedy growth as properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.attribution import LIME, XRAI, Anchors, KernelSHAP, superpixels
from lightning_xai.attribution.surrogate import kl_bounds, lime_kernel, shapley_kernel
from lightning_xai.data import ShapesDataset
from tests.helpers.models import make

pytestmark = pytest.mark.numerics

captum_attr = pytest.importorskip("captum.attr")
captum_linear = pytest.importorskip("captum._utils.models.linear_model")


def _shapes(n: int = 2, size: int = 32) -> torch.Tensor:
    return ShapesDataset(num_samples=n, image_size=size, num_classes=4, seed=5).images


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).flatten(1).sum(1)
        return torch.stack([s, -s, 0 * s], dim=1)


class Quadratic(nn.Module):
    """A non-additive game: class 0 is a product of two block means plus a square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, :, :4, :4].mean((1, 2, 3))
        b = x[:, :, 4:, :4].mean((1, 2, 3))
        c = x[:, :, :, 4:].mean((1, 2, 3))
        s = 3 * a * b + c.square() - a
        return torch.stack([s, -s], dim=1)


def _lime_similarity(width: float):
    """captum's similarity_func signature, with LIME's kernel written out from the paper:
    exp(-D^2 / (2 w^2)) on the cosine distance between the coalition and the all-ones vector."""

    def similarity(original, perturbed, interpretable, **kwargs):
        z = interpretable.double().flatten()
        ones = torch.ones_like(z)
        cos = (z @ ones) / (z.norm() * ones.norm()) if z.norm() > 0 else torch.tensor(0.0, dtype=torch.float64)
        return torch.exp(-((1 - cos) ** 2) / (2 * width**2))

    return similarity


def _replay(rows: torch.Tensor, prefix: list[torch.Tensor] | None = None):
    def generator(original, **kwargs):
        for row in prefix or []:
            yield row
        for row in rows:
            yield row[None]

    return generator


# --------------------------------------------------------------------------------------------
# superpixels
# --------------------------------------------------------------------------------------------
SMALL_IMAGE_KWARGS = {"quickshift": {"kernel_size": 2, "max_dist": 6}}


@pytest.mark.parametrize("method", ["slic", "quickshift", "felzenszwalb", "grid"])
def test_superpixels_are_contiguous_labels(method: str) -> None:
    images = _shapes(2)
    segments = superpixels(images, method, **SMALL_IMAGE_KWARGS.get(method, {}))
    assert segments.shape == (2, 32, 32) and segments.dtype == torch.long
    for seg in segments:
        labels = seg.unique()
        assert torch.equal(labels, torch.arange(len(labels)))
        assert len(labels) > 1


def test_superpixels_match_scikit_image() -> None:
    from skimage.segmentation import slic

    images = _shapes(1)
    ours = superpixels(images, "slic", n_segments=30)
    ref = slic(images[0].permute(1, 2, 0).double().numpy(), n_segments=30, compactness=10, start_label=0)
    assert np.array_equal(ours[0].numpy(), np.unique(ref, return_inverse=True)[1].reshape(ref.shape))


def test_bad_segmentation_raises() -> None:
    with pytest.raises(ValueError, match="segmentation"):
        LIME(segmentation="watershed")
    with pytest.raises(TypeError):
        KernelSHAP(segmentation=3)
    with pytest.raises(ValueError, match="n_samples"):
        LIME(n_samples=0)
    model, x = make("vgg")
    with pytest.raises(ValueError, match="segments"):
        LIME(n_samples=4).attribute(model, x, 0, segments=torch.zeros(3, 8, 8, dtype=torch.long))


# --------------------------------------------------------------------------------------------
# LIME == captum Lime (SkLearnRidge) on the same superpixels and coalitions
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("segmentation", "baseline"), [("slic", 0.0), ("quickshift", 0.3), ("grid", 0.0)])
def test_lime_equals_captum(segmentation: str, baseline: float) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 4)).eval()
    x = _shapes(1)
    lime = LIME(
        n_samples=120,
        alpha=1.0,
        kernel_width=0.25,
        baseline=baseline,
        segmentation=segmentation,
        segmentation_kwargs=SMALL_IMAGE_KWARGS.get(segmentation),
    )
    segments = lime.segments(x)
    k = int(segments.max()) + 1
    assert k > 5
    samples, weights = lime.sample(k)
    torch.testing.assert_close(weights, lime_kernel(samples, 0.25))
    ours = lime.attribute(model, x, 2, segments=segments, samples=samples)
    ref = captum_attr.Lime(
        model,
        interpretable_model=captum_linear.SkLearnRidge(alpha=1.0),
        similarity_func=_lime_similarity(0.25),
        perturb_func=_replay(samples),
    ).attribute(x, target=2, feature_mask=segments[:, None], n_samples=len(samples), baselines=baseline)
    scale = ref.abs().max()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4 * scale)


def test_lime_on_a_linear_model_recovers_the_contributions() -> None:
    """With no penalty, a model linear in the coalition is fitted exactly: each coefficient is the
    superpixel's contribution sum(w * (x - baseline))."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    w = torch.randn(1, 3, 16, 16, generator=gen)
    segments = superpixels(x, "grid", cell_size=4)
    lime = LIME(n_samples=80, alpha=0.0)
    coef = lime.attribute(Linear(w), x, 0, segments=segments, return_coefficients=True)
    contrib = torch.stack(
        [torch.zeros(16).index_add_(0, segments[b].flatten(), (w[0] * x[b]).sum(0).flatten()) for b in range(2)]
    )
    torch.testing.assert_close(coef, contrib, rtol=1e-4, atol=1e-4)


def test_lime_batch_with_different_superpixel_counts_equals_one_by_one() -> None:
    model, _ = make("vgg")
    x = torch.nn.functional.interpolate(_shapes(3), size=(32, 40))
    lime = LIME(n_samples=40, segmentation="slic", segmentation_kwargs={"n_segments": 25})
    counts = lime.segments(x).flatten(1).amax(1)
    assert len(set(counts.tolist())) > 1  # the point of the test
    batched = lime(model, x, 1)
    single = torch.cat([lime(model, x[i : i + 1], 1) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Kernel SHAP
# --------------------------------------------------------------------------------------------
def test_kernel_shap_equals_captum() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 32 * 32, 3)).eval()
    x = _shapes(1)
    shap = KernelSHAP(n_samples=150, segmentation="slic", segmentation_kwargs={"n_segments": 20})
    segments = shap.segments(x)
    k = int(segments.max()) + 1
    assert 2**k - 2 > 150  # sampled, not exhaustive
    samples, _ = shap.sample(k)
    ours = shap.attribute(model, x, 1, segments=segments, samples=samples)
    oracle = captum_attr.KernelShap(model)
    # captum's own generator yields the full and the empty coalition first (weight 1e6), then samples
    oracle.perturb_func = _replay(samples, [torch.ones(1, k, dtype=torch.long), torch.zeros(1, k, dtype=torch.long)])
    ref = oracle.attribute(x, target=1, feature_mask=segments[:, None], n_samples=len(samples) + 2, baselines=0.0)
    scale = ref.abs().max()
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4 * scale)


def test_kernel_shap_efficiency_is_exact() -> None:
    model, x = make("vgg")
    shap = KernelSHAP(n_samples=30, segmentation="grid", segmentation_kwargs={"cell_size": 8})
    coef = shap.attribute(model, x, 3, return_coefficients=True)
    with torch.no_grad():
        gap = model(x)[:, 3] - model(torch.zeros_like(x))[:, 3]
    torch.testing.assert_close(coef.sum(1), gap, rtol=1e-5, atol=1e-6)


def test_kernel_shap_on_a_linear_model_equals_exact_shapley_values() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    w = torch.randn(1, 3, 16, 16, generator=gen)
    baseline = 0.25
    segments = superpixels(x, "grid", cell_size=2)  # 64 superpixels
    shap = KernelSHAP(n_samples=200, baseline=baseline)  # 200 << 2^64: sampled coalitions
    phi = shap.attribute(Linear(w), x, 0, segments=segments, return_coefficients=True)
    # the Shapley value of an additive game is each player's own term
    exact = torch.stack(
        [
            torch.zeros(64).index_add_(0, segments[b].flatten(), (w * (x[b] - baseline)).sum(1).flatten())
            for b in range(2)
        ]
    )
    torch.testing.assert_close(phi, exact, rtol=1e-4, atol=1e-5)


def test_kernel_shap_exhaustive_equals_brute_force_shapley() -> None:
    """K = 5 players, every coalition: the regression with the Shapley kernel gives the Shapley
    values of a non-additive game, computed here from the definition."""
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    segments = torch.zeros(1, 8, 8, dtype=torch.long)
    segments[:, :4, :4] = 0
    segments[:, 4:, :4] = 1
    segments[:, :, 4:6] = 2
    segments[:, :4, 6:] = 3
    segments[:, 4:, 6:] = 4
    model = Quadratic()
    k = 5

    def value(coalition: tuple[int, ...]) -> float:
        keep = torch.isin(segments, torch.tensor(coalition, dtype=torch.long)).float()[:, None]
        return float(model(x * keep)[0, 0])

    exact = torch.zeros(k, dtype=torch.float64)
    for i in range(k):
        others = [j for j in range(k) if j != i]
        for size in range(k):
            for s in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(k - size - 1) / math.factorial(k)
                exact[i] += weight * (value(tuple(s) + (i,)) - value(s))
    shap = KernelSHAP(n_samples=30)  # 2^5 - 2 = 30: exhaustive
    samples, weights = shap.sample(k)
    assert samples.shape == (30, 5)
    torch.testing.assert_close(weights, shapley_kernel(k, samples.sum(1)))
    phi = shap.attribute(model, x, 0, segments=segments, return_coefficients=True)
    torch.testing.assert_close(phi[0].double(), exact, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------------------------
class TwoBlocks(nn.Module):
    """Class 0 needs blocks 3 and 7 of a 4x4 grid of 4x4 cells on a 16x16 image (else class 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x[:, :, 0:4, 12:16].mean((1, 2, 3))  # block 3
        b = x[:, :, 4:8, 12:16].mean((1, 2, 3))  # block 7
        s = 10 * (a + b - 1.5)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_anchor_finds_the_needed_superpixels_and_its_precision_holds() -> None:
    x = torch.ones(2, 3, 16, 16)
    anchors = Anchors(threshold=0.95, delta=0.05, segmentation="grid", segmentation_kwargs={"cell_size": 4})
    result = anchors.explain(TwoBlocks(), x, None)
    assert result.anchors == [[3, 7], [3, 7]]
    assert result.valid.all()
    assert (result.lower_bound >= 0.95).all()
    fresh = anchors.precision(TwoBlocks(), x, result.anchors, None, n_samples=500)
    assert (fresh >= 0.95).all()
    assert torch.equal(result.mask[0, 0], ((torch.arange(16)[:, None] < 8) & (torch.arange(16)[None, :] >= 12)).float())


def test_anchor_precision_claim_holds_on_fresh_samples() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 5, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 14 * 14, 4)).eval()
    x = _shapes(2)
    anchors = Anchors(
        threshold=0.9, delta=0.1, segmentation="slic", segmentation_kwargs={"n_segments": 12}, max_samples=512
    )
    result = anchors.explain(model, x, None)
    fresh = anchors.precision(model, x, result.anchors, None, segments=result.segments, n_samples=1000)
    # the claim: precision >= lower_bound (>= threshold when valid) at confidence 1 - delta;
    # 1000 fresh samples estimate it to within ~3 standard errors
    slack = 3 * torch.sqrt(fresh * (1 - fresh) / 1000) + 1e-3
    assert (fresh + slack >= result.lower_bound).all(), (fresh, result.lower_bound)
    assert (fresh[result.valid] + slack[result.valid] >= 0.9).all()


class KeptShare(nn.Module):
    """Class 0 while more than 90% of the image is kept: an anchor needs most of the superpixels."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        s = 10 * (x.mean((1, 2, 3)) - 0.9)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_anchor_budget_bounds_the_forwards() -> None:
    """The search stops before a pull would pass ``budget`` perturbed inputs per image (counted at
    the model), and returns its best anchor so far, not valid; unbounded it needs far more."""
    x = torch.ones(2, 3, 16, 16)
    grid = {"segmentation": "grid", "segmentation_kwargs": {"cell_size": 4}}  # 16 superpixels
    model = KeptShare()
    result = Anchors(budget=1500, **grid).explain(model, x)
    assert model.rows - 2 == int(result.n_samples.sum())  # 2: the prediction of the batch
    assert (result.n_samples <= 1500).all() and (result.n_samples > 1500 - 2 * 32).all()
    assert not result.valid.any() and all(len(a) >= 1 for a in result.anchors)
    assert ((result.lower_bound <= result.precision) & (result.precision <= 1)).all()

    unbounded = KeptShare()
    full = Anchors(budget=None, max_anchor_size=6, **grid).explain(unbounded, x[:1])
    assert int(full.n_samples[0]) > 3 * 1500 and unbounded.rows - 1 == int(full.n_samples[0])
    with pytest.raises(ValueError, match=r"n_init \* superpixels = 32 \* 16 = 512"):
        Anchors(budget=500, **grid)(model, x)
    with pytest.raises(ValueError, match="budget"):
        Anchors(budget=16, n_init=32)


def test_kl_bounds() -> None:
    means = torch.tensor([0.0, 0.5, 0.9, 1.0])
    low, up = kl_bounds(means, torch.full((4,), 0.1))
    assert (low <= means.double() + 1e-12).all() and (up >= means.double() - 1e-12).all()
    # KL(p || bound) = level at the bounds (interior ones)
    p, q = 0.5, up[1].item()
    assert abs(p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q)) - 0.1) < 1e-6


# --------------------------------------------------------------------------------------------
# XRAI
# --------------------------------------------------------------------------------------------
def test_xrai_greedy_growth_by_hand() -> None:
    """Three overlapping regions on a 1x4 strip; attributions [4, 2, 1, -1]."""
    attr = torch.tensor([[[4.0, 2.0, 1.0, -1.0]]])
    regions = torch.tensor([[[True, True, False, False]], [[False, True, True, True]], [[False, False, True, False]]])
    xrai = XRAI(min_pixel_diff=1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    out = xrai.attribute(model, torch.zeros(1, 1, 1, 4), 0, segments=[regions], attributions=attr)
    # step 1: gains 3, 2/3, 1 -> region 0 (value 3); step 2: new pixels of 1: {2,3} gain 0, of 2: {2} gain 1
    # -> region 2 (value 1); step 3: region 1 adds {3}, gain -1
    torch.testing.assert_close(out, torch.tensor([[[[3.0, 3.0, 1.0, -1.0]]]]))


def test_xrai_puts_the_top_region_where_integrated_gradients_is() -> None:
    gen = torch.Generator().manual_seed(4)
    # bright: black and white baselines would cancel on a linear model where x sums to 1.5
    x = 0.8 + 0.2 * torch.rand(1, 3, 16, 16, generator=gen)
    w = torch.zeros(1, 3, 16, 16)
    w[..., 4:8, 8:12] = 1.0  # only this block matters
    segments = [torch.stack([superpixels(x, "grid", cell_size=4)[0] == i for i in range(16)])]
    out = XRAI(n_steps=8, min_pixel_diff=1).attribute(Linear(w), x, 0, segments=segments)
    top = out[0, 0] == out.max()
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[4:8, 8:12] = True
    assert torch.equal(top, expected)


def test_xrai_multiscale_segments_cover_the_image() -> None:
    x = _shapes(1)
    segs = XRAI(scales=(50, 200))(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)), x, 0)
    assert segs.shape == (1, 3, 32, 32) and torch.isfinite(segs).all()
    masks = XRAI(scales=(50, 200)).segments(x)[0]
    assert masks.any(0).all() and masks.shape[0] > 2
