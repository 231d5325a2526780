"""CAV: the batched dual (Newton) and primal (L-BFGS) solvers against a literal scipy minimisation
of the same objective and against each other, bounded memory for many random sets, the sign
convention, determinism, example sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.concepts import CAV, load_examples, sample_examples
from lightning_xai.concepts.cav import fit_linear
from tests.helpers.concept_models import DetectorNet, background, with_patches


@pytest.mark.parametrize("solver", ["dual", "primal"])
@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_fit_linear_matches_scipy_on_the_same_objective(classifier, solver):
    from scipy.optimize import minimize

    gen = torch.Generator().manual_seed(0)
    k, n, d, reg = 3, 24, 5, 0.05
    x = torch.randn(k, n, d, generator=gen, dtype=torch.float64) * 3 + 1
    y = (torch.rand(k, n, generator=gen) > 0.5).double()
    x = x + y.unsqueeze(-1) * 0.8
    w = torch.ones(k, n, dtype=torch.float64)
    w[:, -4:] = 0.0  # held out / padding
    normal, bias = fit_linear(x, y, w, classifier=classifier, regularization=reg, solver=solver)
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


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("classifier", ["logistic", "svm"])
def test_primal_and_dual_solutions_agree(classifier, dtype):
    gen = torch.Generator().manual_seed(1)
    k, n, d = 4, 40, 12
    x = (torch.randn(k, n, d, generator=gen, dtype=torch.float64) * 2 + 0.5).to(dtype)
    y = (torch.rand(k, n, generator=gen) > 0.4).double()
    x = x + (y.unsqueeze(-1) * 0.7).to(dtype)
    w = torch.ones(k, n, dtype=torch.float64)
    w[1, -6:] = 0.0
    from lightning_xai.concepts.cav import solve_linear

    dual = solve_linear(x, y, w, classifier=classifier, regularization=0.02, solver="dual")
    primal = solve_linear(x, y, w, classifier=classifier, regularization=0.02, solver="primal")
    # both solve in float64 from the same inputs: they differ by the solvers' stopping tolerances
    # (gradient 1e-11 over a Hessian >= reg: 5e-10 in the scaled weights), far below float32 rounding
    for a, b in zip(dual, primal):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(dual[0], solve_linear(x, y, w, regularization=0.2, solver="dual")[0], atol=1e-3)


class _ShapeLog(__import__("torch").utils._python_dispatch.TorchDispatchMode):
    """Records the shape of every tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.shapes.append(tuple(t.shape))
        return out


def _square_at_least(shapes, m):
    return [s for s in shapes if sum(dim >= m for dim in s) >= 2]


def test_many_random_sets_never_allocate_an_m_by_m_matrix():
    import warnings

    from lightning_xai.concepts import TCAV

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    n_random, size = 30, 20
    concept = torch.randn(size, 6) + 1.0
    pool = torch.randn(n_random * size, 6)
    m = size + n_random * size  # 620 examples at a 16-wide layer: problems of N = 40 > D, the primal path
    with _ShapeLog() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = TCAV("1", n_random=n_random)(model, torch.randn(8, 6), 0, {"c": concept}, pool)
    assert result.scores.shape == (1, 1, n_random)
    assert not _square_at_least(log.shapes, m)
    # the detector sees the [M, M] Gram matrix of the former solver
    acts = torch.randn(m, 16)
    with _ShapeLog() as broken:
        _ = acts.double() @ acts.double().T
    assert _square_at_least(broken.shapes, m)
