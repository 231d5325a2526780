"""CAV: the batched Newton solver against a literal scipy minimisation of the same objective, the
sign convention, determinism, example sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.concepts import CAV, load_examples, sample_examples
from lightning_xai.concepts.cav import fit_linear
from tests.helpers.concept_models import DetectorNet, background, with_patches


@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_fit_linear_matches_scipy_on_the_same_objective(classifier):
    from scipy.optimize import minimize

    gen = torch.Generator().manual_seed(0)
    k, n, d, reg = 3, 24, 5, 0.05
    x = torch.randn(k, n, d, generator=gen, dtype=torch.float64) * 3 + 1
    y = (torch.rand(k, n, generator=gen) > 0.5).double()
    x = x + y.unsqueeze(-1) * 0.8
    w = torch.ones(k, n, dtype=torch.float64)
    w[:, -4:] = 0.0  # held out / padding
    normal, bias = fit_linear(x, y, w, classifier=classifier, regularization=reg)
    for i in range(k):
        xi, yi, wi = x[i].numpy(), y[i].numpy() * 2 - 1, w[i].numpy()
        mean = (xi * wi[:, None]).sum(0) / wi.sum()
        scale = np.sqrt((((xi - mean) ** 2).sum(1) * wi).sum() / wi.sum())
        xs = (xi - mean) / scale
        c = wi / wi.sum()

        def objective(p, xs=xs, yi=yi, c=c):
            m = yi * (xs @ p[:d] + p[d])
            loss = np.logaddexp(0, -m) if classifier == "logistic" else np.maximum(0, 1 - m) ** 2
            return (c * loss).sum() + 0.5 * reg * (p**2).sum()

        p = minimize(objective, np.zeros(d + 1), method="BFGS", options={"gtol": 1e-10}).x
        expected = p[:d] / scale
        np.testing.assert_allclose(normal[i].numpy(), expected, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(bias[i].item(), p[d] - expected @ mean, rtol=1e-3, atol=1e-4)


def test_cav_points_to_the_concept_and_is_deterministic():
    model = DetectorNet()
    concept, _ = with_patches(background(30, 0), 1)
    random = background(30, 2)
    cav = CAV.fit(model, "features.1", concept, random, seed=3, name="red")
    assert cav.vector.shape == (1024,) and cav.vector.norm().item() == pytest.approx(1.0)
    assert cav.separates and cav.accuracy > 0.8 and cav.concept == "red" and cav.layer == "features.1"
    # the detector channel (unit 0) carries a positive share of the direction
    assert cav.vector.view(4, 256)[0].sum() > 0
    again = CAV.fit(model, "features.1", concept, random, seed=3)
    assert torch.equal(cav.vector, again.vector)
    svm = CAV.fit(model, "features.1", concept, random, classifier="svm")
    assert torch.nn.functional.cosine_similarity(svm.vector, cav.vector, dim=0) > 0.5


def test_cav_accepts_datasets_loaders_and_folders(tmp_path):
    from PIL import Image

    model = DetectorNet()
    concept, _ = with_patches(background(12, 0), 1)
    random = background(12, 2)
    for i, img in enumerate(concept):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / f"{i:02d}.png")
    from_folder = load_examples(tmp_path)
    assert from_folder.shape == (12, 3, 16, 16)
    torch.testing.assert_close(from_folder, concept, atol=1 / 255, rtol=0)
    a = CAV.fit(model, "features.1", TensorDataset(concept, torch.zeros(12)), DataLoader(random, batch_size=5))
    b = CAV.fit(model, "features.1", concept, random)
    assert torch.equal(a.vector, b.vector)
    c = CAV.fit(model, "features.1", str(tmp_path), random)
    assert torch.nn.functional.cosine_similarity(c.vector, b.vector, dim=0) > 0.99


def test_example_errors(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        load_examples(tmp_path / "missing")
    with pytest.raises(ValueError, match="holds no image file"):
        load_examples(tmp_path)
    with pytest.raises(TypeError, match="Expected the examples of 'x'"):
        load_examples(3, name="x")
    with pytest.raises(ValueError, match="'red' has 2 examples; at least 4"):
        CAV.fit(DetectorNet(), "features.1", torch.rand(2, 3, 16, 16), torch.rand(8, 3, 16, 16), name="red")
    with pytest.raises(ValueError, match="pool of 'random' examples holds 5 examples; 6 are needed"):
        sample_examples(torch.rand(5, 2), 2, 6)
    sets = sample_examples(torch.arange(20.0).view(10, 2), 2, 5)
    assert not set(sets[0][:, 0].tolist()) & set(sets[1][:, 0].tolist())  # disjoint when the pool allows
