"""Integrated Gradients: hand-computed values, captum oracles for every quadrature rule and
baseline, completeness, and the baselines' own definitions.

Oracle comparisons run in float64 on identical weights and inputs."""

from __future__ import annotations

import functools
import re
import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_xai.attribution import IntegratedGradients
from lightning_xai.attribution.path import INTEGRATION_METHODS, gaussian_blur, make_baseline, quadrature
from tests.helpers.models import MODEL_NAMES, make

pytestmark = pytest.mark.numerics

captum_attr = pytest.importorskip("captum.attr")


@functools.cache
def _double(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    model, x = make(name)
    if name == "resnet18":
        x = x[..., :32, :32]  # the same network on a 32x32 crop: 4x cheaper, still 1x1 after layer4
    target = torch.arange(x.shape[0]) % 3 + 1
    return model.double(), x.double(), target


def assert_oracle(ours: Tensor, ref: Tensor, rtol: float = 1e-5) -> None:
    """Agreement to ``rtol`` with an absolute floor scaled to the map's magnitude."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    atol = 1e-6 * float(ref.abs().max()) + 1e-12
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)


def _captum_ig(
    model: nn.Module,
    x: Tensor,
    target: Tensor,
    baseline: Tensor,
    delta: bool = False,
    multiply_by_inputs: bool = True,
    **kwargs: object,
) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ig = captum_attr.IntegratedGradients(model, multiply_by_inputs=multiply_by_inputs)
        return ig.attribute(x.clone(), baselines=baseline, target=target, return_convergence_delta=delta, **kwargs)


# --------------------------------------------------------------------------------------------
# exact values on hand-made models
# --------------------------------------------------------------------------------------------
class _Product(nn.Module):
    """score = x1 * x2 (one class)."""

    def forward(self, x: Tensor) -> Tensor:
        return (x[:, 0] * x[:, 1]).unsqueeze(1)


class _ShiftedRelu(nn.Module):
    """score = relu(x1 - 1) (one class)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x[:, :1] - 1.0)


def test_hand_computed_linear_model_is_exact_for_every_rule() -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))
        model.bias.copy_(torch.tensor([0.25, -1.0]))
    x = torch.tensor([[2.0, 1.0, -4.0]])
    for method in INTEGRATION_METHODS:
        out = IntegratedGradients(n_steps=4, method=method)(model, x, 0)
        torch.testing.assert_close(out, torch.tensor([[2.0, -2.0, -2.0]]), rtol=0, atol=1e-6)


def test_hand_computed_product_model() -> None:
    # IG_1 = x1 * int_0^1 a x2 da = x1 x2 / 2 from the zero baseline: exact for Gauss-Legendre
    x = torch.tensor([[3.0, 5.0]], dtype=torch.float64)
    out = IntegratedGradients(n_steps=2)(_Product(), x, 0)
    torch.testing.assert_close(out, torch.tensor([[7.5, 7.5]], dtype=torch.float64), rtol=1e-14, atol=0)


@pytest.mark.parametrize(
    ("method", "n_steps", "expected"),
    [
        # x1 = 3 on the path a * 3; the gradient is 1 where 3a > 1.
        ("riemann_right", 4, 2.25),  # a = .25, .5, .75, 1 -> 3 * 3/4
        ("riemann_left", 4, 1.5),  # a = 0, .25, .5, .75 -> 3 * 2/4
        ("riemann_middle", 4, 2.25),  # a = .125, .375, .625, .875 -> 3 * 3/4
        ("riemann_trapezoid", 5, 1.875),  # a = 0, .25, .5, .75, 1; w = 1/8, 1/4, 1/4, 1/4, 1/8
    ],
)
def test_hand_computed_relu_model(method: str, n_steps: int, expected: float) -> None:
    x = torch.tensor([[3.0, 7.0]])
    out = IntegratedGradients(n_steps=n_steps, method=method)(_ShiftedRelu(), x, 0)
    assert out.tolist() == [[expected, 0.0]]


def test_quadrature_rules() -> None:
    for method in INTEGRATION_METHODS:
        weights, alphas = quadrature(method, 7)
        assert weights.dtype == np.float64 and len(alphas) == 7
        assert abs(weights.sum() - 1.0) < 1e-14
        assert ((alphas >= 0) & (alphas <= 1)).all()
    nodes, w = np.polynomial.legendre.leggauss(5)
    weights, alphas = quadrature("gausslegendre", 5)
    np.testing.assert_allclose(alphas, (nodes + 1) / 2)
    np.testing.assert_allclose(weights, w / 2)
    assert quadrature("riemann_middle", 2)[1].tolist() == [0.25, 0.75]


# --------------------------------------------------------------------------------------------
# captum oracles
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("method", INTEGRATION_METHODS)
def test_matches_captum_for_every_method(name: str, method: str) -> None:
    model, x, target = _double(name)
    n_steps = 4 if name == "resnet18" else 6
    ours = IntegratedGradients(n_steps=n_steps, method=method, internal_batch_size=5)(model, x, target)
    ref = _captum_ig(model, x, target, torch.zeros_like(x), n_steps=n_steps, method=method)
    if method == "riemann_trapezoid":
        # captum's trapezoid weights are 1/n (halved at the ends) on points spaced 1/(n-1): they
        # sum to 1 - 1/n. Ours are the trapezoid rule's (spacing 1/(n-1)), so ref = ours * (n-1)/n.
        ref = ref * n_steps / (n_steps - 1)
    assert_oracle(ours, ref)


def test_captum_trapezoid_misses_completeness_and_ours_does_not() -> None:
    model = nn.Linear(4, 2).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    ours = IntegratedGradients(n_steps=5, method="riemann_trapezoid")(model, x, 1)
    ref = _captum_ig(
        model, x, torch.ones(3, dtype=torch.long), torch.zeros_like(x), n_steps=5, method="riemann_trapezoid"
    )
    torch.testing.assert_close(ours.sum(1), gap)
    torch.testing.assert_close(ref.sum(1), gap * 4 / 5)


BASELINES = ["zero", "blur", "gaussian", "uniform", "tensor", "callable"]


def _spec(kind: str, x: Tensor) -> object:
    if kind == "tensor":
        return torch.full(x.shape[1:], 0.3, dtype=x.dtype)  # broadcast over the batch
    if kind == "callable":
        return lambda inputs: inputs.flip(-1) * 0.5
    return kind


@pytest.mark.parametrize("kind", BASELINES)
def test_matches_captum_for_every_baseline(kind: str) -> None:
    model, x, target = _double("vgg")
    ig = IntegratedGradients(n_steps=5, baseline=_spec(kind, x), blur_sigma=2.0, noise_std=0.3, seed=4)
    baseline = make_baseline(_spec(kind, x), x, blur_sigma=2.0, noise_std=0.3, seed=4)
    assert torch.equal(ig.baselines(x)[0], baseline)
    assert not torch.equal(baseline, x)
    ours, delta = ig.with_delta(model, x, target)
    ref, ref_delta = _captum_ig(model, x, target, baseline, delta=True, n_steps=5)
    assert_oracle(ours, ref)
    torch.testing.assert_close(delta, ref_delta, rtol=1e-5, atol=1e-8 * float(ref.abs().sum()))


def test_list_of_baselines_averages_captum_runs() -> None:
    model, x, target = _double("small")
    specs = ["zero", "blur", "uniform", "gaussian", _spec("tensor", x)]
    ig = IntegratedGradients(n_steps=4, baseline=specs, internal_batch_size=7)
    baselines = ig.baselines(x)
    assert baselines.shape == (len(specs), *x.shape)
    runs = [_captum_ig(model, x, target, baselines[j], delta=True, n_steps=4) for j in range(len(specs))]
    ours, delta = ig.with_delta(model, x, target)
    assert_oracle(ours, torch.stack([r[0] for r in runs]).mean(0))
    torch.testing.assert_close(delta, torch.stack([r[1] for r in runs]).mean(0), rtol=1e-5, atol=1e-10)
    # each noise baseline in a list has its own seed
    twins = IntegratedGradients(baseline=["uniform", "uniform", "gaussian", "gaussian"]).baselines(x)
    assert not torch.equal(twins[0], twins[1]) and not torch.equal(twins[2], twins[3])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_not_multiplied_by_inputs_matches_captum(name: str) -> None:
    model, x, target = _double(name)
    ours = IntegratedGradients(n_steps=3, multiply_by_inputs=False)(model, x, target)
    ref = _captum_ig(model, x, target, torch.zeros_like(x), n_steps=3, multiply_by_inputs=False)
    assert_oracle(ours, ref)


# --------------------------------------------------------------------------------------------
# completeness, chunking
# --------------------------------------------------------------------------------------------
def test_completeness_on_a_smooth_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(6, 6, 3),
        nn.Softplus(),
        nn.Flatten(),
        nn.Linear(6 * 6 * 6, 4),
    ).double()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x)))[:, 2]
    ig = IntegratedGradients(n_steps=32, baseline=["zero", "blur"])
    attributions, delta = ig.with_delta(model, x, 2)
    assert delta.abs().max() < 1e-9 * gap.abs().max()
    # the delta is what it claims to be, for a list: the mean of per-baseline deltas
    base_scores = torch.stack([model(b)[:, 2] for b in ig.baselines(x)]).detach()
    expected = attributions.flatten(1).sum(1) - (model(x)[:, 2].detach() - base_scores.mean(0))
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-12)
    coarse = IntegratedGradients(n_steps=2, method="riemann_left").with_delta(model, x, 2)[1]
    assert coarse.abs().max() > 1e3 * delta.abs().max(), "the delta must detect a poor approximation"


@pytest.mark.parametrize("internal_batch_size", [1, 4, 7, None])
def test_chunking_does_not_change_the_result(internal_batch_size: int | None) -> None:
    model, x, target = _double("small")
    ig = IntegratedGradients(n_steps=5, baseline=["zero", "uniform"], internal_batch_size=internal_batch_size)
    reference = IntegratedGradients(n_steps=5, baseline=["zero", "uniform"], internal_batch_size=10**6)
    torch.testing.assert_close(ig(model, x, target), reference(model, x, target), rtol=1e-12, atol=1e-15)


def test_default_chunk_bound() -> None:
    ig = IntegratedGradients()
    assert ig._chunk_rows(torch.zeros(2, 3, 224, 224)) == 2**22 // (3 * 224 * 224) == 27
    assert ig._chunk_rows(torch.zeros(1, 3, 8192, 8192)) == 1
    assert IntegratedGradients(internal_batch_size=3)._chunk_rows(torch.zeros(2, 5)) == 3


def test_predicted_target_and_float32() -> None:
    model, x = make("vgg")
    predicted = model(x).argmax(1)
    ig = IntegratedGradients(n_steps=4)
    out = ig(model, x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ig(model, x, predicted))


# --------------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------------
def test_blur_matches_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 11, 17, dtype=torch.float64)
    for sigma in (0.7, 2.0, 9.0):  # 9 pixels: the kernel is wider than the image
        expected = ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=4.0)
        np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, rtol=1e-10, atol=1e-12)
    line = torch.rand(2, 3, 13, dtype=torch.float64)
    expected = ndimage.gaussian_filter(line.numpy(), sigma=(0, 0, 1.5), mode="nearest", truncate=4.0)
    np.testing.assert_allclose(gaussian_blur(line, 1.5).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(gaussian_blur(x, 0.0), x)
    with pytest.raises(ValueError, match=r"\[B, C, \*spatial\]"):
        gaussian_blur(torch.rand(2, 5), 1.0)


def test_noise_baselines_definitions() -> None:
    x = torch.rand(3, 2, 30, 30, dtype=torch.float64) * torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64).view(
        3, 1, 1, 1
    )
    low = x.flatten(1).amin(1).view(3, 1, 1, 1)
    spread = x.flatten(1).amax(1).view(3, 1, 1, 1) - low
    rng = torch.get_rng_state()
    gaussian = make_baseline("gaussian", x, noise_std=0.2, seed=1)
    uniform = make_baseline("uniform", x, seed=1)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG was used"
    z = (gaussian - x) / (0.2 * spread)
    torch.testing.assert_close(z[0], z[1])  # same draws for every input: batch invariant
    assert abs(float(z.std()) - 1) < 0.05 and abs(float(z.mean())) < 0.05
    u = (uniform - low) / spread
    torch.testing.assert_close(u[0], u[2])
    assert float(u.min()) >= 0 and float(u.max()) <= 1 and abs(float(u.mean()) - 0.5) < 0.05
    assert torch.equal(gaussian, make_baseline("gaussian", x, noise_std=0.2, seed=1))
    assert not torch.equal(gaussian, make_baseline("gaussian", x, noise_std=0.2, seed=2))
    torch.testing.assert_close(make_baseline("uniform", x[1:2], seed=1), uniform[1:2])


def test_baseline_errors() -> None:
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="does not broadcast"):
        make_baseline(torch.zeros(5), x)
    with pytest.raises(TypeError, match="return a Tensor"):
        make_baseline(lambda inputs: 0.0, x)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="does not broadcast"):
        IntegratedGradients(baseline=torch.zeros(3, 3, 4, 4))(nn.Sequential(nn.Flatten(), nn.Linear(48, 2)), x, 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(n_steps=0), ValueError, "Expected argument `n_steps` to be an int >= 1, but got 0."),
        (dict(n_steps=2.5), TypeError, "Expected argument `n_steps` to be an int, but got 2.5"),
        (dict(method="riemann_trapezoid", n_steps=1), ValueError, "`n_steps` to be an int >= 2"),
        (dict(method="simpson"), ValueError, "Expected argument `method` to be one of"),
        (dict(baseline="black"), ValueError, "Expected argument `baseline` to be one of"),
        (dict(baseline=[]), ValueError, "at least one baseline"),
        (
            dict(internal_batch_size=0),
            ValueError,
            "Expected argument `internal_batch_size` to be an int >= 1, but got 0.",
        ),
        (
            dict(blur_sigma=-1.0),
            ValueError,
            "Expected argument `blur_sigma` to be a finite float >= 0.0, but got -1.0.",
        ),
        (dict(noise_std=float("inf")), ValueError, "`noise_std`"),
        (dict(seed="0"), TypeError, "`seed`"),
        (dict(seed=1.5), TypeError, "Expected argument `seed` to be an int, but got 1.5"),
    ],
)
def test_argument_validation(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        IntegratedGradients(**kwargs)


def test_argument_type_validation() -> None:
    with pytest.raises(TypeError, match="`baseline`"):
        IntegratedGradients(baseline=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="floating-point"):
        IntegratedGradients(baseline=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="`multiply_by_inputs`"):
        IntegratedGradients(multiply_by_inputs=1)  # type: ignore[arg-type]
