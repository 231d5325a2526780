"""Explanation-quality metrics: the papers' properties, Metric classes against their functions,
reliability against published values, and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.attribution import GradCAM, GuidedBackprop, Saliency
from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics import (
    ROAD,
    ROAR,
    DeletionAUC,
    FaithfulnessCorrelation,
    Fragility,
    Infidelity,
    InsertionAUC,
    InternalConsistency,
    LocalLipschitz,
    MapSimilarity,
    MaskAUPR,
    MaskMass,
    MaxSensitivity,
    MetricReliability,
    ParameterRandomization,
    PointingGame,
)
from lightning_xai.metrics import functional as MF
from tests.helpers.models import trained_shapes_model


def _linear() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


# -- localisation ------------------------------------------------------------------------------
def test_true_mask_as_map_scores_pointing_game_and_aupr_one() -> None:
    _, test = trained_shapes_model()
    masks = test.masks[:16]
    assert MF.pointing_game(masks, masks).tolist() == [1.0] * 16
    assert torch.allclose(MF.mask_aupr(masks, masks), torch.ones(16))
    assert torch.allclose(MF.mask_mass(masks, masks), torch.ones(16))
    inverted = 1 - masks  # everything but the object: never a hit, AUPR at chance or below
    assert MF.pointing_game(inverted, masks).sum() == 0
    assert (MF.mask_aupr(inverted, masks) <= masks.flatten(1).mean(1) + 1e-6).all()


def test_mask_aupr_equals_scikit_learn_with_ties() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 5, (6, 1, 8, 8), generator=gen).float()  # many ties
    masks = (torch.rand(6, 1, 8, 8, generator=gen) > 0.6).float()
    ours = MF.mask_aupr(maps, masks)
    theirs = [sklearn.average_precision_score(masks[i].flatten(), maps[i].flatten()) for i in range(6)]
    assert torch.allclose(ours.double(), torch.tensor(theirs, dtype=torch.float64), atol=1e-6)


# -- similarity ----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(16, 16), (12, 20)])
def test_hog_similarity_equals_scikit_image_hog_and_pearson(size: tuple[int, int]) -> None:
    """The stated recipe, recomputed with scikit-image and numpy: HOG (9 orientations, cells of
    max(2, min(H, W) // 4) pixels, 2x2 blocks, L2-Hys) of |map| summed over channels and min-max
    scaled, then the Pearson correlation of the two descriptors."""
    hog = pytest.importorskip("skimage.feature").hog
    import numpy as np

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 2, *size, generator=gen)
    b = a + 0.7 * torch.randn(3, 2, *size, generator=gen)
    ours = MF.map_similarity(a, b, "hog")
    side = max(2, min(size) // 4)

    def descriptor(m: torch.Tensor) -> np.ndarray:
        img = m.double().abs().sum(0).numpy()
        img = (img - img.min()) / (img.max() - img.min())
        return hog(img, orientations=9, pixels_per_cell=(side, side), cells_per_block=(2, 2), block_norm="L2-Hys")

    theirs = [np.corrcoef(descriptor(a[i]), descriptor(b[i]))[0, 1] for i in range(3)]
    np.testing.assert_allclose(ours.double().numpy(), theirs, atol=1e-6)
    assert float(ours.max()) < 0.99  # the noise moved the descriptors
    metric = MapSimilarity("hog")
    metric.update(a[:1], b[:1])
    metric.update(a[1:], b[1:])
    assert torch.allclose(metric.compute().double(), torch.tensor(theirs).mean(), atol=1e-6)


def test_hog_similarity_properties() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 1, 16, 16, generator=gen)
    b = torch.rand(2, 1, 16, 16, generator=gen)
    ones = torch.ones(2)
    assert torch.allclose(MF.map_similarity(a, a, "hog"), ones, atol=1e-6)  # identical maps
    assert torch.allclose(MF.map_similarity(a, 3 * a + 0.5, "hog"), ones, atol=1e-6)  # same after min-max scaling
    assert torch.allclose(MF.map_similarity(a, -a, "hog"), ones, atol=1e-6)  # |map|: the sign is ignored
    assert torch.equal(MF.map_similarity(a, b, "hog"), MF.map_similarity(b, a, "hog"))  # symmetric
    stripes = (torch.arange(16) % 4 < 2).float().view(1, 1, 1, 16).expand(1, 1, 16, 16)
    vertical, horizontal = stripes, stripes.transpose(-1, -2)
    assert float(MF.map_similarity(vertical, horizontal, "hog")) < 0.0  # edges at right angles
    assert float(MF.map_similarity(vertical, vertical.roll(1, dims=-1), "hog")) > 0.9  # same edges, shifted


# -- faithfulness on a trained model -----------------------------------------------------------
def test_deletion_auc_of_gradient_beats_random_on_shapes() -> None:
    model, test = trained_shapes_model()
    x, y = test.images[:32], test.labels[:32]
    grad = Saliency()(model, x, y)
    random = torch.rand(grad.shape, generator=torch.Generator().manual_seed(0))
    ours, rnd = MF.deletion_auc(model, x, grad, y), MF.deletion_auc(model, x, random, y)
    assert ours.mean() < rnd.mean() - 0.05
    ins, ins_rnd = MF.insertion_auc(model, x, grad, y), MF.insertion_auc(model, x, random, y)
    assert ins.mean() > ins_rnd.mean()


def test_cascading_randomisation_gradient_and_gradcam_decorrelate_guided_backprop_does_not() -> None:
    """Adebayo et al. 2018: guided backprop is insensitive to the top layers' weights."""
    model, test = trained_shapes_model()
    x, y = test.images[:16], test.labels[:16]
    top = {}
    for name, explainer in (("gradient", Saliency()), ("grad_cam", GradCAM()), ("guided", GuidedBackprop())):
        sims = MF.parameter_randomization(model, x, explainer, y, mode="cascading")
        top[name] = float(sims[:2].mean())  # after randomising the classifier and the last conv
    assert top["gradient"] < 0.35 and top["grad_cam"] < 0.35
    assert top["guided"] > 0.5


def test_independent_randomisation_restores_other_layers() -> None:
    model, test = trained_shapes_model()
    x, y = test.images[:4], test.labels[:4]
    layers = MF.randomization_layers(model)
    indep = MF.parameter_randomization(model, x, Saliency(), y, mode="independent")
    casc = MF.parameter_randomization(model, x, Saliency(), y, mode="cascading")
    assert indep.shape == casc.shape == (len(layers), 4)
    assert torch.allclose(indep[0], casc[0])  # the first step is the same in both modes
    single = MF.parameter_randomization(model, x, Saliency(), y, layers=[layers[2]])
    assert torch.allclose(single[0], indep[2])


def test_faithfulness_correlation_of_a_linear_models_exact_attribution_is_one() -> None:
    model = _linear()
    x = torch.rand(3, 1, 4, 4)
    target = torch.tensor([0, 1, 2])
    phi = (model[1].weight[target].view(3, 1, 4, 4) * x).detach()  # exact contributions w.r.t. a 0 baseline
    corr = MF.faithfulness_correlation(model, x, phi, target, runs=20, subset_size=5, baseline=0.0)
    assert torch.allclose(corr, torch.ones(3, dtype=corr.dtype), atol=1e-5)


def test_infidelity_equals_captum() -> None:
    captum_metrics = pytest.importorskip("captum.metrics")
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x, target = torch.rand(3, 1, 4, 4), torch.tensor([0, 1, 2])
    phi = Saliency(abs=False)(model, x, target)
    noise = torch.randn(6, 3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.1
    queue = list(noise)

    def perturb(inputs):
        n = queue.pop(0)
        return n, inputs - n

    theirs = captum_metrics.infidelity(model, perturb, x, phi, target=target, n_perturb_samples=1,
                                       max_examples_per_batch=3, normalize=True)  # fmt: skip
    theirs_all = [theirs]
    for _ in range(5):
        theirs_all.append(captum_metrics.infidelity(model, perturb, x, phi, target=target, n_perturb_samples=1,
                                                    normalize=False))  # fmt: skip
    ours = MF.infidelity(model, x, phi, target, perturbations=noise[:1], normalize=True)
    assert torch.allclose(ours, theirs_all[0].to(ours.dtype), rtol=1e-4, atol=1e-8)
    ours_raw = MF.infidelity(model, x, phi, target, perturbations=noise[1:2], normalize=False)
    assert torch.allclose(ours_raw, theirs_all[1].to(ours.dtype), rtol=1e-4, atol=1e-8)


def test_road_most_relevant_first_drops_faster_than_random() -> None:
    model, test = trained_shapes_model()
    x, y = test.images[:16], test.labels[:16]
    grad = Saliency()(model, x, y)
    morf = MF.road(model, x, grad, y, fractions=[0.1, 0.3, 0.5])
    rnd = MF.road(model, x, grad, y, fractions=[0.1, 0.3, 0.5], order="random")
    assert morf.shape == (16, 3) and morf.mean() < rnd.mean()


def test_linear_imputation_is_harmonic() -> None:
    x = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(1, 2, 8, 8).contiguous()  # a linear ramp
    removed = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    removed[..., 2:6, 2:6] = True
    filled = MF.linear_imputation(x, removed)
    assert torch.allclose(filled, x, atol=1e-6)
    # the solution satisfies the imputation equations: each removed pixel is its neighbours' weighted mean
    ramp = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(0))
    holes = torch.rand(2, 1, 7, 9, generator=torch.Generator().manual_seed(1)) > 0.3
    out = MF.linear_imputation(ramp, holes).double()
    kernel = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)
    ones = torch.ones(1, 1, 7, 9, dtype=torch.float64)
    weight = torch.nn.functional.conv2d(ones, kernel.view(1, 1, 3, 3), padding=1)
    sums = torch.nn.functional.conv2d(out.view(6, 1, 7, 9), kernel.view(1, 1, 3, 3), padding=1)
    mean = sums.view(2, 3, 7, 9) / weight
    assert torch.allclose(out[holes.expand_as(out)], mean[holes.expand_as(out)], atol=1e-6)
    assert MF.linear_imputation(ramp, holes, max_iterations=2).sub(out).abs().max() > 1e-3  # the guard stops early


def test_roar_retrains_per_fraction() -> None:
    calls = []

    def fit(images, labels):
        calls.append(images.shape)
        return _linear()

    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    acc, rnd = MF.roar(fit, x, y, x, x, y, x, fractions=[0.25, 0.5])
    assert len(calls) == 4 and acc.shape == rnd.shape == (2,)


# -- robustness ----------------------------------------------------------------------------------
def test_fragility_finds_a_label_preserving_move_on_a_relu_net() -> None:
    model, test = trained_shapes_model()
    x, y = test.images[:4], test.labels[:4]
    result = MF.fragility(model, x, Saliency(), y, epsilon=0.05, iterations=3)
    # sample 2 sits on the decision boundary (p = 0.48 / 0.52): every step flips its label, so it keeps 1
    assert result.topk_intersection.shape == (4,) and float(result.topk_intersection.mean()) < 0.8
    assert (result.topk_intersection <= 1).all() and (result.center_shift >= 0).all()


def test_local_lipschitz_is_zero_for_a_linear_models_gradient_and_seeded() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.rand(3, 1, 4, 4)
    a1 = MF.local_lipschitz(model, x, Saliency(), samples=4, seed=3)
    a2 = MF.local_lipschitz(model, x, Saliency(), samples=4, seed=3, batch_size=5)
    assert torch.equal(a1, a2) and (a1 > 0).all()
    state = torch.get_rng_state()
    MF.max_sensitivity(model, x, Saliency(), samples=4)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never touched
    assert MF.local_lipschitz(_linear(), x, Saliency(), samples=4).abs().max() == 0


# -- reliability ---------------------------------------------------------------------------------
def test_krippendorff_alpha_matches_krippendorffs_published_example() -> None:
    """Krippendorff (2011), 'Computing Krippendorff's alpha-reliability': 4 observers x 12 units."""
    n = float("nan")
    ratings = torch.tensor([
        [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3],
        [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n],
    ])  # fmt: skip
    expected = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    for level, value in expected.items():
        assert abs(float(MF.krippendorff_alpha(ratings, level)) - value) < 5e-4, level


def test_metric_reliability_high_for_consistent_rankings_low_for_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    consistent = torch.tensor([0.1, 0.5, 0.9]) + 0.01 * torch.randn(20, 3, generator=gen)
    noise = torch.rand(20, 3, generator=gen)
    assert MF.metric_reliability(consistent) > 0.9
    assert MF.metric_reliability(noise) < 0.3
    metric = MetricReliability()
    metric.update(consistent[:10])
    metric.update(consistent[10:])
    assert torch.allclose(metric.compute().double(), MF.metric_reliability(consistent))


def test_cronbach_alpha_by_hand_and_by_the_covariance_formula() -> None:
    """Cronbach (1951) on a small table, in exact fractions from the textbook formula
    ``k / (k - 1) * (1 - sum(item variances) / variance(total))`` (sample variances), and the
    equivalent ``k * mean_cov / (mean_var + (k - 1) * mean_cov)`` on a random table."""
    from fractions import Fraction

    table = [[1, 2, 3, 4, 5], [2, 2, 3, 5, 4], [1, 3, 3, 4, 6]]  # 3 metrics x 5 units

    def var(xs):
        m = Fraction(sum(xs), len(xs))
        return sum((Fraction(x) - m) ** 2 for x in xs) / (len(xs) - 1)

    k = len(table)
    totals = [sum(col) for col in zip(*table)]
    expected = Fraction(k, k - 1) * (1 - sum(var(row) for row in table) / var(totals))
    # by hand: item variances 5/2, 17/10, 33/10 (sum 15/2); totals 4, 7, 9, 13, 15 with variance 99/5;
    # alpha = 3/2 * (1 - (15/2) / (99/5)) = 41/44
    assert expected == Fraction(41, 44)
    got = MF.internal_consistency(torch.tensor(table, dtype=torch.float64))
    assert abs(float(got) - float(expected)) < 1e-12
    scores = torch.randn(4, 30, generator=torch.Generator().manual_seed(0)) + torch.randn(30)
    cov = torch.cov(scores.double())
    mean_var, mean_cov = cov.diag().mean(), (cov.sum() - cov.diag().sum()) / (4 * 3)
    assert torch.allclose(MF.internal_consistency(scores), 4 * mean_cov / (mean_var + 3 * mean_cov))
    assert torch.allclose(MF.internal_consistency(torch.stack([scores[0], scores[0]])), torch.tensor(1.0).double())


def test_reliability_metrics_over_uneven_updates_equal_their_functions() -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.rand(23, 4, generator=gen) + torch.linspace(0, 1, 23).view(-1, 1)  # units x metrics
    consistency, reliability = InternalConsistency(), MetricReliability()
    for rows in (slice(0, 1), slice(1, 8), slice(8, 10), slice(10, 23)):
        consistency.update(scores[rows])
        reliability.update(scores[rows])
    assert torch.allclose(consistency.compute().double(), MF.internal_consistency(scores.T), atol=1e-6)
    assert torch.allclose(reliability.compute().double(), MF.metric_reliability(scores), atol=1e-6)
    assert float(consistency.compute()) > 0.5  # the shared trend dominates
    with pytest.raises(ValueError, match="4 metrics per row"):
        consistency.update(torch.rand(2, 3))
    with pytest.raises(ValueError, match="4 explainers per row"):
        reliability.update(torch.rand(2, 3))
    with pytest.raises(ValueError, match=r"\[units, metrics >= 2\]"):
        InternalConsistency().update(torch.rand(5))
    single = InternalConsistency()
    single.update(scores[:1])
    assert torch.isnan(single.compute())


# -- Metric classes equal their functions ----------------------------------------------------
def test_metric_classes_accumulate_the_functional_values() -> None:
    model, test = trained_shapes_model()
    x, y, masks = test.images[:8], test.labels[:8], test.masks[:8]
    grad = Saliency()(model, x, y)
    cases = [
        (DeletionAUC(steps=8), (model, x, grad, y), MF.deletion_auc(model, x, grad, y, steps=8)),
        (InsertionAUC(steps=8), (model, x, grad, y), MF.insertion_auc(model, x, grad, y, steps=8)),
        (PointingGame(), (grad, masks), MF.pointing_game(grad, masks)),
        (MaskAUPR(), (grad, masks), MF.mask_aupr(grad, masks)),
        (MaskMass(), (grad, masks), MF.mask_mass(grad, masks)),
        (MapSimilarity("ssim"), (grad, grad.flip(-1)), MF.map_similarity(grad, grad.flip(-1), "ssim")),
    ]
    for metric, args, values in cases:
        metric.update(*[a[:4] if isinstance(a, torch.Tensor) else a for a in args])
        metric.update(*[a[4:] if isinstance(a, torch.Tensor) else a for a in args])
        assert torch.allclose(metric.compute(), values.float().nanmean(), atol=1e-6), type(metric).__name__
    prt = ParameterRandomization(Saliency())
    prt.update(model, x[:4], y[:4])
    prt.update(model, x[4:], y[4:])
    assert torch.allclose(prt.compute(), MF.parameter_randomization(model, x, Saliency(), y).mean(dim=1), atol=1e-6)
    assert prt.layers == MF.randomization_layers(model)
    lip = LocalLipschitz(Saliency(), samples=3)
    lip.update(model, x[:4], y[:4])
    assert torch.allclose(lip.compute(), MF.local_lipschitz(model, x[:4], Saliency(), y[:4], samples=3, seed=0).mean())
    road = ROAD(fractions=[0.2, 0.6])
    road.update(model, x, grad, y)
    assert road.compute().shape == (2,)
    roar = ROAR(fractions=[0.5])
    roar.update(torch.tensor([[0, 1]]), torch.tensor([[1, 1]]), torch.tensor([0, 1]))
    assert roar.compute()["accuracy"].reshape(-1).tolist() == [1.0] and float(roar.compute()["gap"]) == -0.5


SEEDED = {
    "faithfulness_correlation": (
        lambda seed, **kw: FaithfulnessCorrelation(runs=4, subset_size=4, seed=seed, **kw),
        lambda m, x, a, y, seed: MF.faithfulness_correlation(m, x, a, y, runs=4, subset_size=4, seed=seed),
    ),
    "infidelity": (
        lambda seed, **kw: Infidelity(runs=3, seed=seed, **kw),
        lambda m, x, a, y, seed: MF.infidelity(m, x, a, y, runs=3, seed=seed),
    ),
    "local_lipschitz": (
        lambda seed, **kw: LocalLipschitz(Saliency(), samples=2, seed=seed, **kw),
        lambda m, x, a, y, seed: MF.local_lipschitz(m, x, Saliency(), y, samples=2, seed=seed),
    ),
    "max_sensitivity": (
        lambda seed, **kw: MaxSensitivity(Saliency(), samples=2, seed=seed, **kw),
        lambda m, x, a, y, seed: MF.max_sensitivity(m, x, Saliency(), y, samples=2, seed=seed),
    ),
    "fragility": (
        lambda seed, **kw: Fragility(
            Saliency(), attack="random", epsilon=0.5, iterations=1, candidates=2, seed=seed, **kw
        ),
        lambda m, x, a, y, seed: (
            MF.fragility(
                m, x, Saliency(), y, attack="random", epsilon=0.5, iterations=1, candidates=2, seed=seed
            ).topk_intersection
        ),
    ),
    "road": (
        lambda seed, **kw: ROAD(fractions=[0.3, 0.6], noise_std=0.5, seed=seed, **kw),
        lambda m, x, a, y, seed: MF.road(m, x, a, y, fractions=[0.3, 0.6], noise_std=0.5, seed=seed),
    ),
}


def _seeded_args(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2])
    maps = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    needs_maps = name in ("faithfulness_correlation", "infidelity", "road")
    return model, ((model, x, maps, y) if needs_maps else (model, x, y))


def _value(name: str, per_sample: torch.Tensor) -> torch.Tensor:
    """A metric's value on one batch from its function's per-sample output."""
    return per_sample.double().mean(0).float() if name == "road" else per_sample.double().nanmean().float()


@pytest.mark.parametrize("sync_on_step", [False, True], ids=["one_update", "two_updates"])
@pytest.mark.parametrize("name", list(SEEDED))
def test_seeded_metrics_draw_anew_per_batch_and_forward_agrees_with_update(name: str, sync_on_step: bool) -> None:
    """Batch i draws with ``seed + i`` under ``forward`` (either way torchmetrics runs it) and
    ``update`` alike: two batches differ, a rerun repeats, forward's batch value is a fresh
    metric's value on that batch, and both paths accumulate the same mean."""
    build, function = SEEDED[name]
    model, args = _seeded_args(name)
    x, maps, y = args[1], args[2] if len(args) == 4 else None, args[-1]

    def forward_twice() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        metric = build(7, dist_sync_on_step=sync_on_step)  # True: torchmetrics' forward calls update twice
        first, second = metric(*args), metric(*args)
        return first, second, metric.compute()

    first, second, total = forward_twice()
    tol = {"rtol": 1e-5, "atol": 1e-6}  # float32 model outputs, means over a few samples
    assert not torch.allclose(first, second, **tol), "two batches reused the same draws"
    for i, value in enumerate((first, second)):
        torch.testing.assert_close(value, _value(name, function(model, x, maps, y, 7 + i)), **tol)
    fresh = build(7)
    fresh.update(*args)
    torch.testing.assert_close(fresh.compute(), first, **tol)
    fresh.update(*args)
    torch.testing.assert_close(fresh.compute(), total, **tol)
    again = forward_twice()  # a fixed seed reproduces
    for a, b in zip(again, (first, second, total)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    fresh.reset()  # reset restarts the draws at the seed
    fresh.update(*args)
    torch.testing.assert_close(fresh.compute(), first, **tol)


def test_nan_values_are_skipped_and_counted() -> None:
    metric = PointingGame()
    maps = torch.rand(2, 1, 4, 4)
    masks = torch.zeros(2, 1, 4, 4)
    masks[0].view(-1)[maps[0].flatten().argmax()] = 1  # sample 1's mask is empty
    metric.update(maps, masks)
    assert float(metric.compute()) == 1.0 and int(metric.skipped) == 1


# -- bad input -------------------------------------------------------------------------------
def test_bad_input_errors() -> None:
    model = _linear()
    x, a = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"attributions.*\[2, 1 or 1, 4, 4\]"):
        MF.deletion_auc(model, x, torch.rand(2, 1, 3, 4))
    with pytest.raises(ValueError, match="masks.*None"):
        MF.pointing_game(a, None)
    with pytest.raises(ValueError, match=r"masks.*\[2, 1, 4, 4\]"):
        MF.mask_aupr(a, torch.ones(2, 1, 5, 5))
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\).*1.5"):
        MF.road(model, x, a, fractions=[0.5, 1.5])
    with pytest.raises(ValueError, match="fraction in"):
        MF.fragility(model, x, Saliency(), k=0.0)
    with pytest.raises(LightningXAIError, match="NaN"):
        MF.pixel_flipping(model, x, torch.full_like(a, float("nan")))

    def nan_explainer(model, inputs, target):
        return torch.full_like(inputs, float("nan"))

    with pytest.raises(LightningXAIError, match="explainer output.*NaN"):
        MF.local_lipschitz(model, x, nan_explainer, samples=2)
    with pytest.raises(ValueError, match="measure"):
        MF.map_similarity(a, a, "cosine")
    with pytest.raises(ValueError, match="mode"):
        MF.parameter_randomization(model, x, Saliency(), mode="top")
    with pytest.raises(TypeError, match="explainer"):
        MF.max_sensitivity(model, x, "saliency")
    with pytest.raises(ValueError, match="steps"):
        DeletionAUC(steps=0)
    with pytest.raises(ValueError, match="baseline"):
        MF.deletion_auc(model, x, a, baseline="grey")
    with pytest.raises(ValueError, match="subset_size"):
        MF.faithfulness_correlation(model, x, a, subset_size=17)
    with pytest.raises(ValueError, match="level"):
        MF.krippendorff_alpha(torch.rand(2, 3), "cardinal")
    with pytest.raises(ValueError, match="runs"):
        FaithfulnessCorrelation(runs=1)
