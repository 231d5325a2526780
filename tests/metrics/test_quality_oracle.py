"""Explanation-quality metrics against quantus on identical models, inputs, maps and random draws.

quantus draws its randomness inside (``np.random.choice``, its ``perturb_func``): we record the
draws (or inject our own perturbation function) and hand the same draws to ours, so every
comparison below is deterministic and held to 1e-5.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_xai.attribution import InputXGradient, Saliency
from lightning_xai.metrics.functional import (
    faithfulness_correlation,
    input_invariance,
    linear_imputation,
    local_lipschitz,
    max_sensitivity,
    parameter_randomization,
    pixel_flipping,
    pointing_game,
    randomization_layers,
    region_perturbation,
    removal_masks,
    road,
)

pytestmark = pytest.mark.numerics

quantus = pytest.importorskip("quantus")
warnings.filterwarnings("ignore", module="quantus")

B, H = 4, 12


def _model(padding: int = 1) -> nn.Module:
    torch.manual_seed(0)
    side = H - 2 * (1 - padding)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=padding),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * side * side, 3),
    )
    with torch.no_grad():  # non-trivial eval-mode BatchNorm
        model[3].running_mean.uniform_(-0.1, 0.1)
        model[3].running_var.uniform_(0.5, 1.5)
    return model.eval()


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(B, 1, H, H, generator=gen)
    a = torch.randn(B, 1, H, H, generator=gen)  # continuous: no ties in any ordering
    y = torch.tensor([0, 1, 2, 1])
    return x, a, y


def _np(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [t.detach().numpy() for t in tensors]


def _explain_func(explainer):
    def explain(model, inputs, targets, **kwargs):
        return explainer(model, torch.as_tensor(inputs).float(), torch.as_tensor(targets)).numpy()

    return explain


@pytest.mark.parametrize("order", ["morf", "lerf"])
def test_pixel_flipping_equals_quantus(order: str) -> None:
    model, (x, a, y) = _model(), _data()
    if order == "lerf":  # quantus has no LeRF switch: flip the map instead
        ours = pixel_flipping(model, x, a, y, features_in_step=8, order="lerf")
        a_q = -a
    else:
        ours = pixel_flipping(model, x, a, y, features_in_step=8)
        a_q = a
    xn, yn, an = _np(x, y, a_q)
    metric = quantus.PixelFlipping(features_in_step=8, normalise=False, abs=False, disable_warnings=True)
    theirs = np.array(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, device="cpu"))
    assert ours.shape == theirs.shape == (B, H * H // 8)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


@pytest.mark.parametrize("patch_size", [4, 5])  # 5: the grid does not divide 12 (quantus pads)
def test_region_perturbation_equals_quantus(patch_size: int) -> None:
    model, (x, a, y) = _model(), _data()
    ours = region_perturbation(model, x, a, y, patch_size=patch_size, regions=6)
    xn, yn, an = _np(x, y, a)
    metric = quantus.RegionPerturbation(
        patch_size=patch_size, regions_evaluation=6, normalise=False, abs=False, disable_warnings=True
    )
    theirs = np.array(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, device="cpu"))
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


def test_faithfulness_correlation_equals_quantus_on_recorded_subsets(monkeypatch: pytest.MonkeyPatch) -> None:
    model, (x, a, y) = _model(), _data()
    drawn: list[np.ndarray] = []
    choice = np.random.choice

    def recording_choice(*args, **kwargs):
        out = choice(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(np.random, "choice", recording_choice)
    xn, yn, an = _np(x, y, a)
    metric = quantus.FaithfulnessCorrelation(
        nr_runs=10, subset_size=20, normalise=False, abs=False, disable_warnings=True, return_aggregate=False
    )
    theirs = np.array(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, device="cpu"))
    monkeypatch.setattr(np.random, "choice", choice)
    subsets = torch.as_tensor(np.stack(drawn)).view(10, B, 20).transpose(0, 1)  # runs x batch, in draw order
    ours = faithfulness_correlation(model, x, a, y, subsets=subsets, batch_size=17)  # odd chunking on purpose
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


def _injected(noises: list[np.ndarray]):
    queue = list(noises)

    def perturb(arr, indices, **kwargs):
        return arr + queue.pop(0)

    return perturb


def test_local_lipschitz_equals_quantus_on_injected_noise() -> None:
    model, (x, _, y) = _model(), _data()
    explainer = Saliency(abs=False)
    a = explainer(model, x, y)
    rng = np.random.default_rng(0)
    noises = [rng.normal(0, 0.1, size=(B, H * H)).astype(np.float32) for _ in range(5)]
    xn, yn, an = _np(x, y, a)
    metric = quantus.LocalLipschitzEstimate(
        nr_samples=5, perturb_func=_injected(noises), normalise=False, abs=False, disable_warnings=True
    )
    theirs = np.array(
        metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_explain_func(explainer), device="cpu")
    )
    ours = local_lipschitz(model, x, explainer, y, noise=torch.as_tensor(np.stack(noises)).view(5, B, 1, H, H))
    assert (ours > 0).all()
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5)


def test_max_sensitivity_equals_quantus_on_injected_noise() -> None:
    model, (x, _, y) = _model(), _data()
    explainer = Saliency(abs=False)
    a = explainer(model, x, y)
    rng = np.random.default_rng(1)
    noises = [rng.uniform(-0.2, 0.2, size=(B, H * H)).astype(np.float32) for _ in range(5)]
    xn, yn, an = _np(x, y, a)
    metric = quantus.MaxSensitivity(
        nr_samples=5, perturb_func=_injected(noises), normalise=False, abs=False, disable_warnings=True
    )
    theirs = np.array(
        metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_explain_func(explainer), device="cpu")
    )
    ours = max_sensitivity(model, x, explainer, y, noise=torch.as_tensor(np.stack(noises)).view(5, B, 1, H, H),
                           batch_size=7)  # fmt: skip
    assert (ours > 0).all()
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-5)


def test_pointing_game_equals_quantus_with_hits_misses_and_ties() -> None:
    model, (x, a, y) = _model(), _data()
    a = a.clone()
    masks = torch.zeros(B, 1, H, H)
    flat = a.flatten(1).argmax(dim=1)
    masks.view(B, -1)[0, flat[0]] = 1  # hit
    masks.view(B, -1)[1, (flat[1] + 1) % (H * H)] = 1  # miss next to the maximum
    a[2, 0, 0, 0] = a[2].max()  # a tie for the maximum, one of them inside
    masks[2, 0, 0, 0] = 1
    masks[3, 0, :6] = 1  # a large region
    xn, yn, an, sn = _np(x, y, a, masks)
    metric = quantus.PointingGame(normalise=False, abs=False, disable_warnings=True)
    theirs = np.array(metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, s_batch=sn, device="cpu"), dtype=float)
    ours = pointing_game(a, masks)
    assert ours[:3].tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_array_equal(ours.numpy(), theirs)


@pytest.mark.parametrize("explainer", [Saliency(abs=False), Saliency(abs=True)], ids=["signed", "abs"])
def test_mprt_cascading_equals_quantus(explainer) -> None:
    model, (x, _, y) = _model(), _data()
    a = explainer(model, x, y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    xn, yn, an = _np(x, y, a)
    metric = quantus.MPRT(seed=42, normalise=False, abs=False, disable_warnings=True)
    theirs = metric(
        model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_explain_func(explainer), device="cpu"
    )
    ours = parameter_randomization(model, x, explainer, y, seed=43)  # quantus seeds each reset with seed + 1
    layers = randomization_layers(model)
    assert list(theirs)[1:] == layers
    for row, layer in zip(ours, layers):
        np.testing.assert_allclose(row.numpy(), np.array(theirs[layer]), atol=1e-5)
    assert ours[-1].abs().max() < 0.9  # the fully randomised model's maps moved
    for k, v in model.state_dict().items():  # the trained model is untouched
        assert torch.equal(v, before[k]), k


def test_input_invariance_equals_quantus() -> None:
    # quantus leaves input element [i, 0, 0, 0] unshifted (its shift skips index 0): a first
    # convolution without padding whose weight at kernel position (0, 0) is zero never sees that
    # element except through a zero weight, so the defect cannot change either side.
    model, (x, _, y) = _model(padding=0), _data()
    with torch.no_grad():
        model[0].weight[:, :, 0, 0] = 0
    results = {}
    for explainer in (Saliency(abs=False), InputXGradient()):
        a = explainer(model, x, y)
        xn, yn, an = _np(x, y, a)
        metric = quantus.InputInvariance(normalise=False, abs=False, disable_warnings=True)
        theirs = np.array(
            metric(
                model=model, x_batch=xn, y_batch=yn, a_batch=an, explain_func=_explain_func(explainer), device="cpu"
            ),
            dtype=float,
        )
        ours = input_invariance(model, x, explainer, y)
        np.testing.assert_array_equal(ours.numpy(), theirs)
        results[type(explainer).__name__] = ours
    assert results["Saliency"].tolist() == [1.0] * B  # the gradient is invariant
    assert results["InputXGradient"].tolist() == [0.0] * B  # x * gradient is not


def test_linear_imputation_equals_quantus_noisy_linear_imputation() -> None:
    """Three channels, masks touching the border and corners, up to 90% removed, noise 0."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 10, 13, generator=gen)
    removed = removal_masks(torch.randn(3, 1, 10, 13, generator=gen), [0.1, 0.5, 0.9])  # [F, B, 1, H, W]
    removed[0, 0, 0, :, 0] = True  # a whole border column
    for masks in removed:
        ours = linear_imputation(x, masks)
        for i in range(x.shape[0]):
            idx = np.flatnonzero(masks[i, 0].numpy().reshape(-1))
            theirs = noisy_linear_imputation(x[i].numpy(), idx, noise=0.0)
            np.testing.assert_allclose(ours[i].numpy(), theirs, atol=1e-5)
        assert torch.equal(ours[~masks.expand_as(x)], x[~masks.expand_as(x)])  # kept pixels untouched


def test_road_equals_quantus_on_recorded_imputations() -> None:
    """quantus ``ROAD`` (noise 0) with its imputation recorded: the same removed pixels, the same
    imputed images (1e-5), our scores are the model's softmax on its images, and its accuracy
    per percentage is the accuracy of our images. The percentages are those where quantus's
    ``int(p * H * W / 100)`` equals our ``round(fraction * H * W)``."""
    from quantus.functions.perturb_func import noisy_linear_imputation

    model, (x, a, y) = _model(), _data()
    percentages = [10, 25, 50, 75]
    recorded: list[tuple[np.ndarray, np.ndarray]] = []

    def recording(arr, indices, **kwargs):
        out = noisy_linear_imputation(arr, indices, noise=0.0)
        recorded.append((np.sort(indices), out))
        return out

    xn, yn, an = _np(x, y, a)
    metric = quantus.ROAD(percentages=percentages, noise=0.0, perturb_func=recording, normalise=False, abs=False,
                          disable_warnings=True)  # fmt: skip
    theirs = metric(model=model, x_batch=xn, y_batch=yn, a_batch=an, device="cpu")
    fractions = [p / 100 for p in percentages]
    masks = removal_masks(a, fractions)  # [F, B, 1, H, W]
    ours = road(model, x, a, y, fractions=fractions, noise_std=0.0)  # [B, F] softmax scores
    assert len(recorded) == len(percentages) * B  # quantus: percentage-major, then sample
    their_images = torch.stack([torch.as_tensor(out) for _, out in recorded]).view(len(percentages), B, 1, H, H)
    for f in range(len(percentages)):
        for i in range(B):
            assert np.array_equal(recorded[f * B + i][0], np.flatnonzero(masks[f, i, 0].numpy().reshape(-1)))
        mine = linear_imputation(x, masks[f])
        np.testing.assert_allclose(mine.numpy(), their_images[f].numpy(), atol=1e-5)
        with torch.no_grad():
            probs = model(their_images[f]).softmax(dim=1)
            accuracy = float((model(mine).argmax(dim=1) == y).float().mean())
        np.testing.assert_allclose(ours[:, f].numpy(), probs[torch.arange(B), y].numpy(), atol=1e-5)
        assert accuracy == pytest.approx(theirs[percentages[f]])
