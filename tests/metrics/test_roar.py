"""ROAR (Hooker et al. 2019) on real data: scikit-learn's 8x8 digits (offline), a tiny MLP retrained
for a few epochs per fraction. The paper's property: removing the pixels a trained model's map ranks
highest hurts the retrained model more than removing as many random pixels. Plus the caveat of Rong
et al. 2022 (a mean-grey hole keeps the digit's silhouette), determinism and bad input."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor, nn

from lightning_xai.attribution import InputXGradient
from lightning_xai.metrics import functional as MF

EPOCHS = 20


def _digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8] in [0, 1]
    y = torch.tensor(data.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, test = perm[:1347], perm[1347:]
    return x[train], y[train], x[test], y[test]


def fit_mlp(images: Tensor, labels: Tensor, epochs: int = EPOCHS) -> nn.Module:
    """A fresh 64-64-10 MLP, Adam, batch 64 (initialisation and order from the global RNG, which
    roar seeds)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        order = torch.randperm(len(labels))
        for start in range(0, len(order), 64):
            batch = order[start : start + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(images[batch]), labels[batch]).backward()
            opt.step()
    return model.eval()


@functools.lru_cache(maxsize=1)
def _setup() -> tuple[tuple[Tensor, ...], Tensor, Tensor, float]:
    xtr, ytr, xte, yte = _digits()
    torch.manual_seed(0)
    model = fit_mlp(xtr, ytr)
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    explainer = InputXGradient()  # maps of the predicted class, ranked by magnitude
    return (xtr, ytr, xte, yte), explainer(model, xtr).abs(), explainer(model, xte).abs(), acc


def test_attribution_order_hurts_the_retrained_model_more_than_random_order() -> None:
    (xtr, ytr, xte, yte), mtr, mte, base = _setup()
    assert base > 0.9  # the unperturbed model is good, so a drop means something
    acc, rnd = MF.roar(fit_mlp, xtr, ytr, mtr, xte, yte, mte, fractions=[0.5, 0.7], fill=0.0)
    # removed pixels become background (0: uninformative on digits); seen: 0.37/0.08 vs 0.69/0.51 (at 0.50/0.70)
    assert acc[1] < rnd[1] - 0.2
    assert acc[0] < rnd[0]
    assert bool((rnd > 0.4).all())  # random removal of 70% still leaves a learnable digit


def test_mean_fill_leaks_the_silhouette_on_digits() -> None:
    # Rong et al. 2022's caveat, and why the test above fills with the background: the mean-grey
    # pixels that replace the strokes draw the digit again, and the retrained model reads them
    (xtr, ytr, xte, yte), mtr, mte, _ = _setup()
    acc, rnd = MF.roar(fit_mlp, xtr, ytr, mtr, xte, yte, mte, fractions=[0.5], fill="mean")
    assert acc[0] > rnd[0] + 0.05  # seen: 0.89 vs 0.76


def test_roar_is_seeded_repeatable_and_restores_the_global_rng() -> None:
    (xtr, ytr, xte, yte), mtr, mte, _ = _setup()
    fit = functools.partial(fit_mlp, epochs=1)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = MF.roar(fit, xtr[:256], ytr[:256], mtr[:256], xte, yte, mte, fractions=[0.3], seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = MF.roar(fit, xtr[:256], ytr[:256], mtr[:256], xte, yte, mte, fractions=[0.3], seed=5)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_roar_replaces_the_ranked_pixels_with_the_fill() -> None:
    seen: list[Tensor] = []

    def fit(images: Tensor, labels: Tensor) -> nn.Module:
        seen.append(images.clone())
        return nn.Sequential(nn.Flatten(), nn.Linear(2 * 16, 3))

    torch.manual_seed(0)
    x = torch.rand(5, 2, 4, 4) + 1.0  # values in [1, 2): a fill of -1 is unambiguous
    maps = torch.rand(5, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 0, 1])
    MF.roar(fit, x, y, maps, x, y, maps, fractions=[0.25, 0.5], fill=-1.0)
    assert len(seen) == 4  # two fractions x (map order, random order)
    top4 = maps.flatten(1).topk(4, dim=1).indices
    removed = seen[0][:, 0].flatten(1) == -1.0
    assert removed.sum(1).tolist() == [4] * 5  # round(0.25 * 16) pixels per image, all channels
    assert torch.equal(removed, torch.zeros_like(removed).scatter_(1, top4, True))
    assert torch.equal(seen[0][:, 0] == -1.0, seen[0][:, 1] == -1.0)
    assert (seen[1] == -1.0).flatten(1).sum(1).tolist() == [16] * 5  # 8 pixels x 2 channels
    assert (seen[2] == -1.0).flatten(1).sum(1).tolist() == [8] * 5  # random order, same counts
    # the default fill is the per-channel mean of the unmodified training images
    seen.clear()
    MF.roar(fit, x, y, maps, x, y, maps, fractions=[0.25])
    mean = x.mean(dim=(0, 2, 3))
    for c in range(2):
        assert torch.isclose(seen[0][:, c].flatten(1)[removed], mean[c]).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fractions": [1.0]}, ValueError, "fraction"),
        ({"fill": "median"}, ValueError, "median"),
        ({"fill": torch.zeros(3, 1, 1)}, ValueError, "broadcast"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_roar_rejects_bad_arguments(kwargs: dict, error: type, match: str) -> None:
    x, y = torch.rand(4, 2, 4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(error, match=match):
        MF.roar(lambda i, t: nn.Flatten(), x, y, x, x, y, x, **kwargs)


def test_roar_rejects_mismatched_labels_and_a_non_module() -> None:
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="train_labels"):
        MF.roar(lambda i, t: nn.Flatten(), x, y[:3], x, x, y, x)
    with pytest.raises(ValueError, match="test_maps"):
        MF.roar(lambda i, t: nn.Flatten(), x, y, x, x, y, x[:, :, :2])
    with pytest.raises(TypeError, match="nn.Module"):
        MF.roar(lambda i, t: "not a model", x, y, x, x, y, x, fractions=[0.5])
    with pytest.raises(TypeError, match="callable"):
        MF.roar("fit", x, y, x, x, y, x)  # type: ignore[arg-type]
