"""Gradient-family explainers: hand-computed values, captum oracles, the modified-ReLU mechanism
and SmoothGrad/VarGrad definitions.

Oracle comparisons run in float64 on identical weights and inputs."""

from __future__ import annotations

import functools
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai.attribution import Deconvnet, GuidedBackprop, InputXGradient, NoiseTunnel, Saliency
from lightning_xai.attribution.gradient import deconvnet_rule, guided_rule, modified_relu
from lightning_xai.errors import LightningXAIError
from tests.helpers.models import MODEL_NAMES, SharedReluCNN, make

pytestmark = pytest.mark.numerics

captum_attr = pytest.importorskip("captum.attr")


@functools.cache
def _double(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    """A float64 copy of ``make(name)`` and a fixed per-sample target (explainers leave models as
    they found them, so the cache is safe)."""
    model, x = make(name)
    if name == "resnet18":
        x = x[..., :32, :32]  # the same network on a 32x32 crop: 4x cheaper, still 1x1 after layer4
    model = model.double()
    x = x.double()
    target = torch.arange(x.shape[0]) % 3 + 1
    return model, x, target


def assert_oracle(ours: Tensor, ref: Tensor, rtol: float = 1e-5) -> None:
    """Agreement to ``rtol`` with an absolute floor scaled to the map's magnitude."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype
    atol = 1e-6 * float(ref.abs().max()) + 1e-12
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)


def _captum(cls: type, model: nn.Module, x: Tensor, target: Tensor, **kwargs: object) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls(model).attribute(x.clone(), target=target, **kwargs).detach()


# --------------------------------------------------------------------------------------------
# exact values on a hand-weighted model
# --------------------------------------------------------------------------------------------
def _hand_model() -> nn.Module:
    """h = relu(W1 x), scores = W2 h with W1 = [[1, -1], [2, 1]], W2 = [[3, 0.5], [-1, 2]]."""
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
        model[2].weight.copy_(torch.tensor([[3.0, 0.5], [-1.0, 2.0]]))
    return model


@pytest.mark.parametrize(
    ("explainer", "target", "expected"),
    [
        # x = (1, 2): pre-activations (-1, 4), so only the second hidden unit is on.
        (Saliency(abs=False), 0, [1.0, 0.5]),  # 0.5 * (2, 1)
        (Saliency(abs=False), 1, [4.0, 2.0]),  # 2 * (2, 1)
        (InputXGradient(), 0, [1.0, 1.0]),  # (1, 2) * (1, 0.5)
        (GuidedBackprop(), 0, [1.0, 0.5]),  # relu((3, .5)) * (0, 1) = (0, .5) -> (1, .5)
        (Deconvnet(), 0, [4.0, -2.5]),  # relu((3, .5)) = (3, .5) -> (3 + 1, -3 + .5)
        (GuidedBackprop(), 1, [4.0, 2.0]),  # relu((-1, 2)) * (0, 1) = (0, 2)
        (Deconvnet(), 1, [4.0, 2.0]),  # relu((-1, 2)) = (0, 2)
    ],
)
def test_hand_computed_values(explainer: object, target: int, expected: list[float]) -> None:
    out = explainer(_hand_model(), torch.tensor([[1.0, 2.0]]), target)  # type: ignore[operator]
    assert out.tolist() == [expected]


def test_saliency_abs_is_absolute_gradient() -> None:
    x = torch.tensor([[1.0, 2.0]])
    model = _hand_model()
    with torch.no_grad():
        model[0].weight.neg_()  # pre-activations (1, -4): gradient of class 0 is 3 * (-1, 1)
    assert Saliency(abs=False)(model, x, 0).tolist() == [[-3.0, 3.0]]
    assert Saliency()(model, x, 0).tolist() == [[3.0, 3.0]]


# --------------------------------------------------------------------------------------------
# captum oracles
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("use_abs", [True, False])
def test_saliency_matches_captum(name: str, use_abs: bool) -> None:
    model, x, target = _double(name)
    ours = Saliency(abs=use_abs)(model, x, target)
    assert_oracle(ours, _captum(captum_attr.Saliency, model, x, target, abs=use_abs))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_input_x_gradient_matches_captum(name: str) -> None:
    model, x, target = _double(name)
    assert_oracle(InputXGradient()(model, x, target), _captum(captum_attr.InputXGradient, model, x, target))


@pytest.mark.parametrize("name", [*MODEL_NAMES, "shared_relu"])
@pytest.mark.parametrize(
    ("ours_cls", "captum_name"), [(GuidedBackprop, "GuidedBackprop"), (Deconvnet, "Deconvolution")]
)
def test_modified_relu_methods_match_captum(name: str, ours_cls: type, captum_name: str) -> None:
    model, x, target = _double(name)
    ours = ours_cls()(model, x, target)
    ref = _captum(getattr(captum_attr, captum_name), model, x, target)
    assert_oracle(ours, ref)
    # the rule made a difference: the modified map is not the plain gradient
    plain = Saliency(abs=False)(model, x, target)
    assert not torch.allclose(ours, plain, rtol=1e-3, atol=1e-3 * float(plain.abs().max()))


# --------------------------------------------------------------------------------------------
# modified ReLU: reuse, in place, functional calls, escapes
# --------------------------------------------------------------------------------------------
class _MethodReluCNN(SharedReluCNN):
    """SharedReluCNN's weights; ReLUs as ``Tensor.relu_()`` (result ignored) and ``torch.relu``."""

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(x)
        h.relu_()
        h = torch.relu(self.conv2(h))
        return self.fc(torch.flatten(self.pool(h), 1))


class _InplaceModuleCNN(SharedReluCNN):
    """SharedReluCNN's weights with in-place ``nn.ReLU`` modules and ``F.relu(inplace=True)``."""

    def __init__(self) -> None:
        super().__init__(3, 5)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.conv1(x))
        h = F.relu(self.conv2(h), inplace=True)
        return self.fc(torch.flatten(self.pool(h), 1))


@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvnet])
@pytest.mark.parametrize("variant", ["functional_relu", "method_relu", "inplace"])
def test_functional_and_inplace_relus_match_module_model(cls: type, variant: str) -> None:
    module_model, x, target = _double("shared_relu")
    if variant == "functional_relu":
        other = make("functional_relu")[0].double()
    else:
        other = (_MethodReluCNN(3, 5) if variant == "method_relu" else _InplaceModuleCNN()).double().eval()
    other.load_state_dict(module_model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(other(x), module_model(x), rtol=0, atol=0)  # same forward
    reference = _captum(
        getattr(captum_attr, "GuidedBackprop" if cls is GuidedBackprop else "Deconvolution"), module_model, x, target
    )
    assert_oracle(cls()(other, x, target), reference)


def test_reused_relu_module_is_modified_at_every_call() -> None:
    model, x, target = _double("shared_relu")
    calls = []
    with modified_relu("guided") as mode:
        model(x)
        calls.append(mode.calls)
    assert calls == [2]


def test_forward_values_unchanged_under_the_mode() -> None:
    for name in MODEL_NAMES:
        model, x, _ = _double(name)
        with torch.no_grad():
            plain = model(x)
            with modified_relu("deconvnet"):
                modified = model(x)
        torch.testing.assert_close(modified, plain, rtol=0, atol=0)


def test_custom_rule_equal_to_relu_derivative_gives_plain_gradient() -> None:
    model, x, target = _double("vgg")
    inputs = x.clone().requires_grad_(True)
    with modified_relu(lambda grad, out: grad * (out > 0)) as mode:
        score = model(inputs).gather(1, target.view(-1, 1)).sum()
    mode.verify(score)
    (grad,) = torch.autograd.grad(score, inputs)
    assert_oracle(grad, Saliency(abs=False)(model, x, target))


def test_rules_and_bad_rule_names() -> None:
    grad, out = torch.tensor([-1.0, 2.0, 3.0, -4.0]), torch.tensor([1.0, 0.0, 2.0, 0.0])
    assert guided_rule(grad, out).tolist() == [0.0, 0.0, 3.0, 0.0]
    assert deconvnet_rule(grad, out).tolist() == [0.0, 2.0, 3.0, 0.0]
    with pytest.raises(ValueError, match="`rule`"):
        with modified_relu("guidde"):
            pass
    with pytest.raises(TypeError, match="`rule`"):
        with modified_relu(3):  # type: ignore[arg-type]
            pass


class _AtenRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(torch.ops.aten.relu(self.fc1(x)))


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")
@pytest.mark.parametrize("cls", [GuidedBackprop, Deconvnet])
def test_relu_that_escapes_raises_instead_of_wrong_map(cls: type) -> None:
    model = _AtenRelu()
    with pytest.raises(LightningXAIError, match="ReluBackward"):
        cls()(model, torch.randn(3, 4), 0)
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)))
    with pytest.raises(LightningXAIError, match=cls.__name__):
        cls()(scripted, torch.randn(3, 4), 0)


def test_mode_is_gone_after_an_error() -> None:
    model = _AtenRelu()
    with pytest.raises(LightningXAIError):
        GuidedBackprop()(model, torch.randn(3, 4), 0)
    x = torch.randn(5, requires_grad=True)
    assert type(torch.relu(x).grad_fn).__name__.startswith("ReluBackward")


# --------------------------------------------------------------------------------------------
# NoiseTunnel
# --------------------------------------------------------------------------------------------
def _captum_noise_tunnel(
    monkeypatch: pytest.MonkeyPatch,
    captum_method: object,
    x: Tensor,
    target: Tensor,
    noise: Tensor,
    kind: str,
    **kwargs: object,
) -> Tensor:
    """captum's NoiseTunnel fed our noise: captum stacks the copies input-major
    (``repeat_interleave``), ours are copy-major, hence the transpose."""
    n = noise.shape[0]
    stacked = noise.transpose(0, 1).reshape(n * x.shape[0], *x.shape[1:])

    def fixed_noise(inputs: Tensor, stdev: float, n_samples: int) -> Tensor:
        assert n_samples == n
        return inputs.repeat_interleave(n_samples, dim=0) + stacked

    monkeypatch.setattr(captum_attr.NoiseTunnel, "_add_noise_to_input", staticmethod(fixed_noise))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = captum_attr.NoiseTunnel(captum_method).attribute(
            x.clone(), nt_type=kind, nt_samples=n, stdevs=1.0, target=target, **kwargs
        )
    return out.detach()


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("kind", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_matches_captum_given_the_same_noise(
    monkeypatch: pytest.MonkeyPatch, name: str, kind: str
) -> None:
    model, x, target = _double(name)
    chunk = 3 if name == "small" else None  # chunking on the cheap model only
    tunnel = NoiseTunnel(Saliency(abs=False), kind=kind, n_samples=3, stdev=0.2, seed=3, internal_batch_size=chunk)
    ref = _captum_noise_tunnel(
        monkeypatch, captum_attr.Saliency(model), x, target, tunnel.sample_noise(x), kind, abs=False
    )
    assert_oracle(tunnel(model, x, target), ref)


def test_noise_tunnel_around_guided_backprop_matches_captum(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, target = _double("vgg")
    tunnel = NoiseTunnel(GuidedBackprop(), kind="smoothgrad", n_samples=3, stdev=0.1)
    ref = _captum_noise_tunnel(
        monkeypatch, captum_attr.GuidedBackprop(model), x, target, tunnel.sample_noise(x), "smoothgrad"
    )
    assert_oracle(tunnel(model, x, target), ref)


@pytest.mark.parametrize("internal_batch_size", [None, 3])
def test_noise_tunnel_matches_the_definition(internal_batch_size: int | None) -> None:
    """Smilkov et al.: mean of maps over noisy copies; SmoothGrad^2: mean of squares; VarGrad
    (Adebayo et al.): their variance, with divisor n (captum's convention)."""
    model, x, target = _double("small")
    saliency = Saliency(abs=False)
    kw = dict(n_samples=5, stdev=0.3, seed=11, internal_batch_size=internal_batch_size)
    noise = NoiseTunnel(saliency, **kw).sample_noise(x)
    maps = torch.stack([saliency(model, x + noise[k], target) for k in range(noise.shape[0])])
    expected = {
        "smoothgrad": maps.mean(0),
        "smoothgrad_sq": (maps**2).mean(0),
        "vargrad": maps.var(0, unbiased=False),
    }
    for kind, value in expected.items():
        assert_oracle(NoiseTunnel(saliency, kind=kind, **kw)(model, x, target), value, rtol=1e-9)


def test_noise_is_a_seeded_fraction_of_each_inputs_range() -> None:
    x = torch.rand(3, 2, 40, 40, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64).view(
        3, 1, 1, 1
    )
    spread = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    rng = torch.get_rng_state()
    tunnel = NoiseTunnel(Saliency(), n_samples=8, stdev=0.25, seed=5)
    noise = tunnel.sample_noise(x)
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG was used"
    assert noise.shape == (8, *x.shape)
    z = noise / (0.25 * spread.view(1, 3, 1, 1, 1))
    # the same standard-normal draws for every input, so a map does not depend on its batch
    torch.testing.assert_close(z[:, 0], z[:, 1])
    torch.testing.assert_close(z[:, 0], z[:, 2])
    assert abs(float(z.std()) - 1.0) < 0.03 and abs(float(z.mean())) < 0.03
    assert torch.equal(noise, tunnel.sample_noise(x))
    assert not torch.equal(noise, NoiseTunnel(Saliency(), n_samples=8, stdev=0.25, seed=6).sample_noise(x))
    torch.testing.assert_close(tunnel.sample_noise(x[1:2]), noise[:, 1:2])


def test_noise_tunnel_target_is_resolved_on_the_clean_input() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.rand(6, 1, 4, 4, dtype=torch.float64)
    predicted = model(x).argmax(1)
    tunnel = NoiseTunnel(Saliency(abs=False), kind="smoothgrad", n_samples=6, stdev=1.0)
    noise = tunnel.sample_noise(x)
    noisy_predictions = torch.stack([model(x + noise[k]).argmax(1) for k in range(6)])
    assert (noisy_predictions != predicted).any(), "the test needs noise that flips some predictions"
    assert_oracle(tunnel(model, x, None), tunnel(model, x, predicted), rtol=0)


def test_noise_tunnel_by_name_and_properties() -> None:
    assert NoiseTunnel("saliency").explainer == Saliency()
    assert NoiseTunnel(Saliency(abs=False)).signed and not NoiseTunnel(Saliency(abs=False), kind="vargrad").signed
    assert not NoiseTunnel(Saliency()).signed and not NoiseTunnel(Saliency()).region
    assert Saliency(abs=False).signed and not Saliency().signed


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(kind="smoothgrad2"), "`kind`"),
        (dict(n_samples=0), "Expected argument `n_samples` to be an int >= 1, but got 0."),
        (dict(stdev=-0.1), "`stdev`"),
        (dict(stdev=float("nan")), "`stdev`"),
        (dict(internal_batch_size=0), "`internal_batch_size`"),
        (dict(seed=1.5), "`seed`"),
    ],
)
def test_noise_tunnel_argument_validation(kwargs: dict, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=re.escape(match)):
        NoiseTunnel(Saliency(), **kwargs)


def test_argument_type_validation() -> None:
    with pytest.raises(TypeError, match="`explainer`"):
        NoiseTunnel(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown explainer"):
        NoiseTunnel("saliencyy")
    with pytest.raises(TypeError, match="`abs`"):
        Saliency(abs=1)  # type: ignore[arg-type]
