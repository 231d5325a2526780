"""Perturbation explainers: captum Occlusion as oracle; the papers' properties elsewhere."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import (
    RISE,
    CounterfactualInfill,
    ExtremalPerturbation,
    MeaningfulPerturbation,
    Occlusion,
    PredictionDifference,
)
from lightning_xai.attribution.perturbation import SmoothMaskGenerator, apply_pyramid, blur_pyramid
from lightning_xai.data import ShapesDataset
from tests.helpers.models import make

captum_attr = pytest.importorskip("captum.attr")


# --------------------------------------------------------------------------------------------
# hand-built models
# --------------------------------------------------------------------------------------------
class Linear(nn.Module):
    """f(x) = <w, x> for class 0 (and its negation for class 1)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).flatten(1).sum(1)
        return torch.stack([s, -s], dim=1)


class BrightShape(nn.Module):
    """Relies on the shape alone: the shapes are bright (HSV value >= 0.75), the background and its
    clutter dark (<= 0.5 + noise). Class 0's logit is the mean brightness excess over 0.6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 50 * F.relu(x.amax(dim=1) - 0.6).flatten(1).mean(1)
        return torch.stack([s, -s], dim=1)


class IgnoreLeft(nn.Module):
    """A CNN that never sees the left half of the image."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.ones_like(x)
        keep[..., : x.shape[-1] // 2] = 0
        return self.net(x * keep)


class CountingModel(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def _shapes(n: int = 12, size: int = 32) -> ShapesDataset:
    return ShapesDataset(num_samples=n, image_size=size, num_classes=4, seed=3)


def _pointing_hits(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pointing game: is the map's maximum on the shape? Ties (a saturated mask) go to the
    maximal pixel deepest inside the saturated blob (a tiny box-filtered copy breaks them)."""
    tie_break = F.avg_pool2d(maps, 5, stride=1, padding=2, count_include_pad=False)
    flat = (maps + 1e-4 * tie_break).flatten(1)
    top = flat.argmax(dim=1)
    return masks.flatten(1).gather(1, top[:, None]).squeeze(1) > 0


# --------------------------------------------------------------------------------------------
# Occlusion == captum Occlusion
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model_name", ["small", "vgg"])
@pytest.mark.parametrize(
    ("window", "stride", "baseline"),
    [((4, 4), (4, 4), 0.0), ((5, 5), (3, 3), 0.5), ((1, 6, 4), (1, 4, 2), -0.2), ((7, 9), (7, 9), 0.0)],
)
def test_occlusion_equals_captum(model_name: str, window: tuple, stride: tuple, baseline: float) -> None:
    model, x = make(model_name)
    channels = x.shape[1]
    if len(window) == 3 and channels == 1:
        window, stride = (1, *window[1:]), (1, *stride[1:])
    target = torch.arange(x.shape[0]) % 3
    ours = Occlusion(window=window, stride=stride, baseline=baseline, internal_batch_size=37)(model, x, target)
    cw = window if len(window) == 3 else (channels, *window)
    cs = stride if len(stride) == 3 else (channels, *stride)
    ref = captum_attr.Occlusion(model).attribute(
        x, sliding_window_shapes=cw, strides=cs, target=target, baselines=baseline, perturbations_per_eval=16
    )
    assert ours.shape == ref.shape
    # the only differences: forward passes over differently sized chunks round differently
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_occlusion_tensor_baseline_equals_captum() -> None:
    model, x = make("vgg")
    baseline = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(5))
    ours = Occlusion(window=(8, 8), stride=(4, 4), baseline=baseline)(model, x, 2)
    ref = captum_attr.Occlusion(model).attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), target=2, baselines=baseline
    )
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_occlusion_bad_arguments_raise_before_forward() -> None:
    model, x = make("small")
    counting = CountingModel(model)
    with pytest.raises(ValueError, match="larger than the input"):
        Occlusion(window=(29, 4))(counting, x, 0)
    with pytest.raises(ValueError, match="stride"):
        Occlusion(window=(4, 4), stride=(5, 5))(counting, x, 0)
    with pytest.raises(ValueError, match="spatial axis"):
        Occlusion(window=(4, 4, 4, 4))(counting, x, 0)
    assert counting.calls == 0
    with pytest.raises(ValueError, match="stride"):
        Occlusion(window=(4, 4), stride=(0, 4))
    with pytest.raises(TypeError):
        Occlusion(window="4")
    with pytest.raises(ValueError, match="window"):
        Occlusion(window=0)


# --------------------------------------------------------------------------------------------
# RISE
# --------------------------------------------------------------------------------------------
def _rise_expected_map(x: torch.Tensor, w: torch.Tensor, cell: int, p: float) -> torch.Tensor:
    """E[f(x * M) M] / p for f = <w, .>, from the mask distribution's second moment, computed
    literally: for every shift, upsample each grid cell's indicator and crop."""
    _, _, height, width = x.shape
    gh, gw = math.ceil(height / cell), math.ceil(width / cell)
    cells = gh * gw
    basis = torch.eye(cells, dtype=torch.float64).view(cells, 1, gh, gw)
    up = F.interpolate(basis, size=((gh + 1) * cell, (gw + 1) * cell), mode="bilinear", align_corners=False)
    second = torch.zeros(height * width, height * width, dtype=torch.float64)
    cov = p * p * torch.ones(cells, cells, dtype=torch.float64) + (p - p * p) * torch.eye(cells, dtype=torch.float64)
    for dy in range(cell):
        for dx in range(cell):
            a = up[:, 0, dy : dy + height, dx : dx + width].reshape(cells, -1).T  # [HW, G]
            second += a @ cov @ a.T
    second /= cell * cell
    v = (x.double() * w.double()).sum(1).flatten(1)  # channel-summed w * x, [B, HW]
    return (v @ second / p).view(x.shape[0], 1, height, width)


def test_rise_converges_to_expected_map_at_root_n_rate() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=gen)
    w = torch.randn(1, 3, 8, 8, generator=gen)
    model = Linear(w)
    expected = _rise_expected_map(x, w, cell=2, p=0.5)
    errors = {}
    for n in (250, 1000, 4000):
        errs = [
            (
                (RISE(n_masks=n, cell_size=2, p=0.5, score="logit", seed=s)(model, x, 0).double() - expected).norm()
                / expected.norm()
            ).item()
            for s in range(4)
        ]
        errors[n] = sum(errs) / len(errs)
    # Monte-Carlo error ~ 1/sqrt(N): 16x the masks, ~4x smaller error
    assert errors[4000] < errors[250] / 2.8, errors
    assert errors[4000] < 0.1, errors


def test_rise_masks_and_seed() -> None:
    rise = RISE(n_masks=300, cell_size=4, p=0.3, seed=1)
    grids, shifts = rise.grids((12, 16), torch.device("cpu"))
    masks = rise.upsample_masks(grids, shifts, (12, 16))
    assert masks.shape == (300, 1, 12, 16)
    assert masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean().item() - 0.3) < 0.05
    model, x = make("vgg")
    a = RISE(n_masks=20, seed=1)(model, x, 0)
    assert torch.equal(a, RISE(n_masks=20, seed=1)(model, x, 0))
    assert not torch.equal(a, RISE(n_masks=20, seed=2)(model, x, 0))
    with pytest.raises(ValueError, match="n_masks"):
        RISE(n_masks=0)
    with pytest.raises(ValueError, match="cell_size"):
        RISE(cell_size=64)(model, x, 0)


# --------------------------------------------------------------------------------------------
# extremal and meaningful perturbation on the shapes data
# --------------------------------------------------------------------------------------------
class SmoothBright(nn.Module):
    """BrightShape without its dead zone (softplus instead of relu), so deleting any bright pixel
    lowers the score even from a fully blurred start, and 20 times larger: logits of the size of an
    ImageNet network's, against which the paper's area weight (300, growing) is tuned."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 1000 * F.softplus(20 * (x.amax(dim=1) - 0.6)).flatten(1).mean(1) / 20
        return torch.stack([s, -s], dim=1)


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)
    ).eval()


def test_blur_pyramid_and_its_interpolation_by_hand() -> None:
    x = torch.rand(2, 3, 9, 9)
    pyramid = blur_pyramid(x, num_levels=3, max_blur=2.0)
    assert pyramid.shape == (2, 3, 3, 9, 9)
    torch.testing.assert_close(pyramid[:, 2], x)  # the last level is the input (sigma 0)
    # level 1 has sigma 1: taps -4..4 weighted exp(-i^2 / 2), normalised, zero padding, separable
    taps = torch.exp(-(torch.arange(-4.0, 5.0) ** 2) / (2 * (1 + 1.1920929e-07 / math.sqrt(2)) ** 2))
    taps = taps / taps.sum()
    padded = F.pad(x, (4, 4, 4, 4))
    by_hand = torch.zeros_like(x)
    for i in range(9):
        for j in range(9):
            by_hand += taps[i] * taps[j] * padded[..., i : i + 9, j : j + 9]
    torch.testing.assert_close(pyramid[:, 1], by_hand)
    sample = torch.tensor([1, 0, 1, 1])
    masks = torch.tensor([1.0, 0.0, 0.5, 0.25]).view(4, 1, 1, 1).expand(4, 1, 9, 9)
    out = apply_pyramid(pyramid, masks, sample)
    torch.testing.assert_close(out[0], x[1])  # mask 1: the input
    torch.testing.assert_close(out[1], pyramid[0, 0])  # mask 0: the most blurred level
    torch.testing.assert_close(out[2], pyramid[1, 1])  # 0.5 * (L - 1) = level 1 exactly
    torch.testing.assert_close(out[3], 0.5 * pyramid[1, 0] + 0.5 * pyramid[1, 1])  # halfway between 0 and 1


def test_smooth_mask_generator_by_hand() -> None:
    gen = SmoothMaskGenerator((10, 10), step=2, sigma=3.0)
    assert gen.shape_in == (5, 5) and gen.radius == 3 and gen.padding == 4
    assert gen.shape_out == (13, 13)  # 2 * (5 + 2 * 4 - 7 + 1) - 2 + 1: the image and a margin, top-left 3
    cropped, full = gen.generate(torch.zeros(1, 1, 5, 5))
    assert torch.equal(full, torch.zeros(1, 1, 13, 13))
    params = torch.zeros(1, 1, 5, 5)
    params[0, 0, 2, 2] = 1.0  # the grid point at pixel (margin + 2 * 2) = (7, 7) of the full mask
    cropped, full = gen.generate(params)
    # one non-zero parameter: the smooth max of a single z = k(u) and zeros is
    # k e^{20k} / (e^{20k} + (n - 1)) over the n = 49 neighbours, k(u) = exp(-2 max(d / sigma - 1/2, 0)^2)
    for u in [(7, 7), (7, 9), (9, 10), (3, 7), (12, 12)]:
        d = math.dist(u, (7, 7))
        k = math.exp(-2 * max(d / 3.0 - 0.5, 0.0) ** 2)
        expected = k * math.exp(20 * k) / (math.exp(20 * k) + 48)
        torch.testing.assert_close(full[0, 0, u[0], u[1]].item(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cropped, full[:, :, 3:13, 3:13])  # cropped at round(margin)


@pytest.mark.parametrize("variant", ["preserve", "delete"])
def test_extremal_matches_torchray(variant: str) -> None:
    tr = pytest.importorskip("torchray.attribution.extremal_perturbation")
    model, x, targets = _tiny_cnn(), torch.rand(2, 3, 20, 20), [1, 2]
    kwargs = dict(areas=[0.1, 0.3], step=3, sigma=5.0)
    # the components
    ours_gen, ref_gen = SmoothMaskGenerator((20, 20), 3, 5.0), tr.MaskGenerator((20, 20), 3, 5.0)
    torch.testing.assert_close(ours_gen.weight, ref_gen.weight[0])
    params = torch.rand(3, 1, *ours_gen.shape_in)
    for ours_mask, ref_mask in zip(ours_gen.generate(params), ref_gen.generate(params)):
        torch.testing.assert_close(ours_mask, ref_mask)
    pyramid, ref_pyramid = blur_pyramid(x[:1]), tr.Perturbation(x[:1])  # 8 levels, blur up to 20
    torch.testing.assert_close(pyramid[0], ref_pyramid.pyramid)
    cropped = ours_gen.generate(params)[0]
    torch.testing.assert_close(
        apply_pyramid(pyramid, cropped, torch.zeros(3, dtype=torch.long)), ref_pyramid.apply(cropped)
    )
    # the whole optimisation: same init (ones), SGD with momentum, area schedule, jitter, 30 steps
    ours = ExtremalPerturbation(variant=variant, n_iter=30, **kwargs).masks(model, x, torch.tensor(targets))
    for i, target in enumerate(targets):
        ref, _ = tr.extremal_perturbation(model, x[i : i + 1], target, variant=variant, max_iter=30, **kwargs)
        # float32, 30 steps, the model batched differently (ours: both images together)
        torch.testing.assert_close(ours[i], ref[:, 0], atol=1e-4, rtol=0)
    for p in model.parameters():  # TorchRay switches them off and leaves them so
        p.requires_grad_(True)


@pytest.mark.parametrize("variant", ["preserve", "delete"])
def test_extremal_area_and_pointing_game(variant: str) -> None:
    data = _shapes(n=4)
    x, masks = data.images, data.masks
    area = 0.05
    explainer = ExtremalPerturbation(
        areas=[area], variant=variant, n_iter=150, step=2, sigma=4.0, max_blur=3.0, lr=0.05
    )
    mask = explainer(SmoothBright(), x, 0)
    assert mask.min() >= 0 and mask.max() <= 1
    # the area is a fraction of the full mask, the image plus a margin (39 x 39 here)
    full = SmoothMaskGenerator((32, 32), 2, 4.0).shape_out
    on = (mask > 0.5).float().flatten(1).sum(1) / (full[0] * full[1])
    assert (on - area).abs().max() < 0.03, on  # the area constraint by ranking (soft: weight 300 * 1.0035^t)
    hits = _pointing_hits(mask, masks)
    assert hits.all(), hits  # pointing game on the shape


def test_extremal_several_areas_batch_invariance() -> None:
    data = _shapes(n=3)
    model = _tiny_cnn()
    explainer = ExtremalPerturbation(areas=[0.05, 0.2], n_iter=10, step=4, sigma=8.0)
    masks = explainer.masks(model, data.images, 0)
    assert masks.shape == (3, 2, 32, 32)
    alone = ExtremalPerturbation(areas=[0.2], n_iter=10, step=4, sigma=8.0).masks(model, data.images[1:2], 0)
    torch.testing.assert_close(alone[0, 0], masks[1, 1], atol=1e-4, rtol=0)  # rows are independent
    total = explainer(model, data.images, 0)
    torch.testing.assert_close(total, masks.sum(1, keepdim=True))


def test_meaningful_perturbation_deletes_the_shape() -> None:
    data = _shapes()
    deletion = MeaningfulPerturbation(n_iter=150, mask_scale=2, score="logit", l1_coeff=0.5)(
        BrightShape(), data.images, 0
    )
    assert deletion.min() >= 0 and deletion.max() <= 1
    inside = (deletion * data.masks).flatten(1).sum(1) / data.masks.flatten(1).sum(1)
    outside = (deletion * (1 - data.masks)).flatten(1).sum(1) / (1 - data.masks).flatten(1).sum(1)
    assert (inside > 3 * outside).all(), (inside, outside)
    assert _pointing_hits(deletion, data.masks).float().mean() >= 0.9


# --------------------------------------------------------------------------------------------
# prediction difference
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["conditional", "marginal"])
def test_prediction_difference_gives_ignored_region_zero_weight(sampler: str) -> None:
    model = IgnoreLeft().eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    window = 4
    evidence = PredictionDifference(window=window, stride=2, n_samples=6, sampler=sampler)(model, x, None)
    ignored = evidence[..., : 16 // 2 - window + 1]  # covered only by windows inside the left half
    assert ignored.abs().max() <= 1e-5 * evidence.abs().max()
    assert evidence[..., 16 // 2 :].abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_prediction_difference_conditional_samples_follow_the_neighbourhood() -> None:
    """On a smooth image the conditional sampler predicts a patch from its frame far better than
    the marginal sampler does."""
    ramp = torch.linspace(0, 1, 16)
    image = (ramp[None, :] + ramp[:, None]).expand(3, 16, 16) / 2
    pd_c = PredictionDifference(window=2, stride=2, padding=2, n_samples=8, sampler="conditional")
    pd_m = PredictionDifference(window=2, stride=2, padding=2, n_samples=8, sampler="marginal")
    ys = torch.tensor([4, 8, 10])
    xs = torch.tensor([6, 2, 12])
    z = torch.randn(8, 3 * 4, generator=torch.Generator().manual_seed(0))
    truth = torch.stack([image[:, y : y + 2, x : x + 2] for y, x in zip(ys.tolist(), xs.tolist())])[:, None]
    err_c = (pd_c._conditional_samples(image, ys, xs, z) - truth).abs().mean()
    err_m = (pd_m._conditional_samples(image, ys, xs, z) - truth).abs().mean()
    assert err_c < 0.1 * err_m, (err_c, err_m)


# --------------------------------------------------------------------------------------------
# counterfactual in-filling
# --------------------------------------------------------------------------------------------
class ShapeMismatch(nn.Module):
    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return x[..., :-1]


class ConstantInfiller(nn.Module):
    """A user in-filler with a parameter: fills with a learned constant colour."""

    def __init__(self) -> None:
        super().__init__()
        self.colour = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return self.colour.expand_as(x)


def test_counterfactual_infill_shape_check_before_forward() -> None:
    model, x = make("vgg")
    counting = CountingModel(model)
    with pytest.raises(ValueError, match="in-filler"):
        CounterfactualInfill(ShapeMismatch(), n_iter=2)(counting, x, 0)
    assert counting.calls == 0
    with pytest.raises(ValueError, match="infiller"):
        CounterfactualInfill("inpaint")
    with pytest.raises(TypeError):
        CounterfactualInfill(3)


@pytest.mark.parametrize("infiller", ["blur", "mean", "gaussian", "user"])
def test_counterfactual_infill_finds_the_shape(infiller: str) -> None:
    data = _shapes(n=6)
    fill = ConstantInfiller() if infiller == "user" else infiller
    if isinstance(fill, nn.Module):
        fill.train()
    sdr = CounterfactualInfill(fill, n_iter=60, mask_scale=2, score="logit", l1_coeff=0.5, lr=0.1)
    drop = sdr(BrightShape(), data.images, 0)
    assert drop.shape == (6, 1, 32, 32)
    if isinstance(fill, nn.Module):
        assert fill.training and fill.colour.requires_grad and fill.colour.grad is None
    assert _pointing_hits(drop, data.masks).float().mean() >= 0.85
    same = CounterfactualInfill(fill, n_iter=60, mask_scale=2, score="logit", l1_coeff=0.5, lr=0.1)(
        BrightShape(), data.images, 0
    )
    assert torch.equal(drop, same)


@pytest.mark.parametrize(
    ("explainer", "message"),
    [
        (
            MeaningfulPerturbation(n_iter=1, mask_scale=9),
            "MeaningfulPerturbation: mask_scale 9 is larger than the image",
        ),
        (CounterfactualInfill(n_iter=1, mask_scale=9), "CounterfactualInfill: mask_scale 9 is larger than the image"),
        (ExtremalPerturbation(areas=[0.1], n_iter=1, step=9), "ExtremalPerturbation: step 9 is larger than the image"),
    ],
)
def test_a_mask_cell_larger_than_the_image_is_refused(explainer, message):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    with pytest.raises(ValueError, match=message + r" \(8, 8\)"):
        explainer(model, torch.rand(1, 3, 8, 8), 0)
