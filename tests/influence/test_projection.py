"""The random projection of TracIn's gradients: never a ``D x k`` matrix, unbiased, seeded, the
same for training and test examples, and the factored (Linear) path equal to the dense one."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lightning_xai.influence import TracIn
from lightning_xai.influence._projection import GradientSketch

pytestmark = pytest.mark.numerics

CLASSES = 5


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, CLASSES)).eval()


def _data(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, CLASSES, (n,), generator=gen)


def _dim(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("layers", [None, ["3"]], ids=["dense", "factored"])
def test_no_d_by_k_tensor_and_memory_bounded_by_the_batch(layers) -> None:
    model = _model()
    d, k, batch = _dim(model), 256, 4
    ckpt = [(model.state_dict(), 0.1)]
    largest = {}
    for n in (8, 32):
        x, y = _data(n)
        with _LargestTensor() as tracker:
            TracIn(layers=layers, projection_dim=k, batch_size=batch).self_influence(model, ckpt, x, y)
        largest[n] = tracker.largest
    # the largest tensor is a batch of gradients (batch x D) or a hash (D), far below D x k
    assert largest[8] <= batch * d + 2 * k < d * k // 8, largest
    assert largest[32] == largest[8], "memory grew with the number of examples"
    with _LargestTensor() as tracker:  # the tracker sees a dense projection matrix (the old way)
        torch.randn(d, k)
    assert tracker.largest == d * k
    sketch = GradientSketch(model, [n for n, _ in model.named_parameters()], k, seed=0, device=torch.device("cpu"))
    sketch.flat(torch.randn(2, d))
    assert sketch.stored_elements() == d


def _exact_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    rows = []
    for i in range(len(x)):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]))
    return torch.stack(rows).double()


def _assert_unbiased(estimates: torch.Tensor, exact: torch.Tensor) -> None:
    """``estimates [S, ...]`` from S seeds: the mean is within 5 standard errors of ``exact`` (a
    two-sided normal tail of 6e-7 per entry), and that band is narrow enough to see a 10% bias."""
    s = estimates.shape[0]
    mean, se = estimates.mean(0), estimates.std(0) / s**0.5
    scale = float(exact.abs().max())
    assert bool((5 * se).max() < 0.1 * scale), "too few seeds to detect a 10% bias"
    assert bool(((mean - exact).abs() <= 5 * se + 1e-9 * scale).all()), (mean - exact).abs().max()
    assert not bool((((1.1 * mean) - exact).abs() <= 5 * se + 1e-9 * scale).all()), "the check cannot fail"


def test_inner_products_preserved_in_expectation() -> None:
    """Dense count sketch (conv + TensorSketch'd linear): the Gram matrix of the sketches averaged
    over 1000 seeds equals the exact one within the statistical tolerance; k = 32 is deliberately
    small (noisy) so the test is sensitive."""
    model = _model()
    x, y = _data(5)
    grads = _exact_grads(model, x, y)
    exact = grads @ grads.T
    names = [n for n, _ in model.named_parameters()]
    estimates = []
    for seed in range(1000):
        sketch = GradientSketch(model, names, 32, seed=seed, device=torch.device("cpu"))
        projected = sketch.flat(grads)
        estimates.append(projected @ projected.T)
    _assert_unbiased(torch.stack(estimates), exact)


def test_factored_sketch_equals_dense_sketch_and_is_unbiased() -> None:
    """The Linear layer's factors sketched separately (FFT) equal the sketch of the dense outer
    product (same hash), and their dot products are unbiased."""
    layer = nn.Linear(7, 3)
    model = nn.Sequential(layer)
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    act = torch.cat([torch.randn(4, 7, generator=gen, dtype=torch.float64), torch.ones(4, 1, dtype=torch.float64)], 1)
    outer = torch.einsum("bo,bi->boi", delta, act)
    dense = torch.cat([outer[:, :, :7].flatten(1), outer[:, :, 7]], dim=1)  # weight, then bias
    exact = dense @ dense.T
    estimates = []
    for seed in range(1000):
        sketch = GradientSketch(model, ["0.weight", "0.bias"], 16, seed=seed, device=torch.device("cpu"))
        factored = sketch.factored("0", layer, delta, act)
        torch.testing.assert_close(factored, sketch.flat(dense), rtol=1e-10, atol=1e-12)
        estimates.append(factored @ factored.T)
    _assert_unbiased(torch.stack(estimates), exact)


@pytest.mark.parametrize("layers", [None, ["3"]], ids=["dense", "factored"])
def test_seeded_and_the_same_for_training_and_test_examples(layers) -> None:
    model = _model()
    x, y = _data(6)
    ckpts = [(model.state_dict(), 0.1), ({k: v * 1.1 for k, v in model.state_dict().items()}, 0.05)]
    tracin = TracIn(layers=layers, projection_dim=32, seed=7, batch_size=4)
    scores = tracin.scores(model, ckpts, x, y, x, y)
    self_influence = tracin.self_influence(model, ckpts, x, y)
    # the same example projected as a training and as a test example: the diagonal is its self-influence
    torch.testing.assert_close(scores.diagonal(), self_influence, rtol=1e-5, atol=1e-7)
    assert torch.equal(scores, TracIn(layers=layers, projection_dim=32, seed=7, batch_size=4).scores(model, ckpts, x, y, x, y))
    other = TracIn(layers=layers, projection_dim=32, seed=8, batch_size=4).self_influence(model, ckpts, x, y)
    assert not torch.allclose(other, self_influence, rtol=1e-3)
    # the online form (a new sketch per checkpoint, test set projected again) equals the offline sums
    online_self, online_scores = torch.zeros(6), torch.zeros(6, 6)
    for state, lr in ckpts:
        model.load_state_dict(state)
        tracin.update(model, lr, [(torch.arange(6), x, y)], online_self, x, y, online_scores)
    torch.testing.assert_close(online_self, self_influence, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(online_scores, scores, rtol=1e-5, atol=1e-7)
