"""The contract every explainer keeps. To test a new method, add it to EXPLAINERS."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from lightning_xai.attribution import (
    CAM,
    LRP,
    Deconvnet,
    DeepLift,
    DeepTaylor,
    Explainer,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    PatternAttribution,
    PatternNet,
    Saliency,
    ScoreCAM,
    available_explainers,
    get_explainer,
)
from tests.helpers.models import make
from tests.helpers.patterns import pattern_file

EXPLAINERS = {
    "saliency": lambda: Saliency(),
    "saliency_signed": lambda: Saliency(abs=False),
    "input_x_gradient": lambda: InputXGradient(),
    "guided_backprop": lambda: GuidedBackprop(),
    "deconvnet": lambda: Deconvnet(),
    "smoothgrad": lambda: NoiseTunnel(Saliency(), kind="smoothgrad", n_samples=3),
    "vargrad": lambda: NoiseTunnel(InputXGradient(), kind="vargrad", n_samples=3),
    "integrated_gradients": lambda: IntegratedGradients(n_steps=6),
    "integrated_gradients_multi": lambda: IntegratedGradients(n_steps=4, baseline=["zero", "blur", "uniform"]),
    "cam": lambda: CAM(),
    "grad_cam": lambda: GradCAM(),
    "guided_grad_cam": lambda: GuidedGradCAM(),
    "grad_cam_plus_plus": lambda: GradCAMPlusPlus(),
    "score_cam": lambda: ScoreCAM(),
    "full_grad": lambda: FullGrad(),
}
EXPLAINERS.update(
    {
        "lrp": lambda: LRP(),
        "lrp_gamma_box": lambda: LRP("epsilon_gamma_box", low=0.0, high=1.0),
        "lrp_alpha2_beta1": lambda: LRP("epsilon_alpha2_beta1"),
        "deep_taylor": lambda: DeepTaylor(low=0.0, high=1.0),
        "deep_lift": lambda: DeepLift(),
        "pattern_net": lambda: PatternNet(pattern_file("small")),
        "pattern_attribution": lambda: PatternAttribution(pattern_file("small")),
    }
)
NEEDS_GAP_HEAD = {"cam"}
# Score-CAM at vgg's last Conv2d sees pre-ReLU activations (the in-place ReLU after it is not part of the
# layer's output), whose weighted sum is negative everywhere on this random model: explain the ReLU instead.
OVERRIDES = {("score_cam", "vgg"): lambda: ScoreCAM(layer="features.6")}
OVERRIDES.update(
    {
        ("pattern_net", "vgg"): lambda: PatternNet(pattern_file("vgg")),
        ("pattern_attribution", "vgg"): lambda: PatternAttribution(pattern_file("vgg")),
    }
)


def build(name: str, model_name: str) -> Explainer:
    return OVERRIDES.get((name, model_name), EXPLAINERS[name])()


MODELS = ["small", "vgg"]
CASES = [(e, m) for m in MODELS for e in EXPLAINERS if not (e in NEEDS_GAP_HEAD and m == "vgg")]
LAYER_EXPLAINERS = {
    "cam": CAM,
    "grad_cam": GradCAM,
    "guided_grad_cam": GuidedGradCAM,
    "grad_cam_plus_plus": GradCAMPlusPlus,
    "score_cam": ScoreCAM,
}


def _hook_count(model: nn.Module) -> int:
    count = 0
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
            "_state_dict_hooks",
        ):
            count += len(getattr(m, attr, {}))
    g = torch.nn.modules.module
    for attr in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        count += len(getattr(g, attr, {}))
    return count


def _snapshot(model: nn.Module) -> dict:
    return {
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "grad_ids": [id(p.grad) for p in model.parameters()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "hooks": _hook_count(model),
        "rng": torch.get_rng_state(),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["modes"] == after["modes"], "module train/eval modes changed"
    assert before["requires_grad"] == after["requires_grad"], "requires_grad changed"
    assert before["grad_ids"] == after["grad_ids"], "parameter .grad objects replaced"
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.equal(a, b), "parameter .grad values changed"
    for k, v in before["state"].items():
        assert torch.equal(v, after["state"][k]), f"state {k} changed (weights or BatchNorm statistics)"
    assert before["hooks"] == after["hooks"], "hooks left behind"
    assert torch.equal(before["rng"], after["rng"]), "global RNG state changed"


def _training_like(model: nn.Module) -> nn.Module:
    """Put the model in the state a training step leaves it: train mode with one sub-module in
    eval, a frozen parameter, and stale .grad on some parameters."""
    model.train()
    params = list(model.parameters())
    list(model.modules())[1].eval()
    params[0].requires_grad_(False)
    for p in params[1::2]:
        p.grad = torch.randn_like(p)
    return model


@pytest.mark.parametrize(("name", "model_name"), CASES)
def test_state_restored_and_shape(name: str, model_name: str) -> None:
    model, x = make(model_name)
    explainer = build(name, model_name)
    _training_like(model)
    before = _snapshot(model)
    out = explainer(model, x, target=None)
    _assert_same(before, _snapshot(model))
    expected = (x.shape[0], 1, *x.shape[2:]) if explainer.region else tuple(x.shape)
    assert tuple(out.shape) == expected
    assert out.device == x.device
    assert not out.requires_grad
    assert torch.isfinite(out).all()
    assert out.abs().sum() > 0, "an all-zero map explains nothing"


@pytest.mark.parametrize(("name", "model_name"), CASES)
def test_inference_mode_and_batch_invariance(name: str, model_name: str) -> None:
    model, x = make(model_name)
    explainer = build(name, model_name)
    target = torch.arange(x.shape[0]) % 3
    with torch.inference_mode():
        x_inf = x.clone()
        batched = explainer(model, x_inf, target)
    one_by_one = torch.cat([explainer(model, x[i : i + 1], target[i : i + 1]) for i in range(x.shape[0])])
    torch.testing.assert_close(batched, one_by_one, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_predicted_target_is_argmax(name: str) -> None:
    model, x = make("small")
    explainer = EXPLAINERS[name]()
    pred = model(x).argmax(dim=1)
    torch.testing.assert_close(explainer(model, x, None), explainer(model, x, pred), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(EXPLAINERS))
@pytest.mark.parametrize("bad", [10, -1, torch.tensor([0, 1]), 1.5])
def test_bad_target_raises_and_leaves_no_hook(name: str, bad: object) -> None:
    model, x = make("small")
    explainer = EXPLAINERS[name]()
    before = _snapshot(model)
    with pytest.raises((ValueError, TypeError)):
        explainer(model, x, bad)
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("name", list(LAYER_EXPLAINERS))
def test_bad_layer_name_lists_valid_names(name: str) -> None:
    model, x = make("small")
    explainer = LAYER_EXPLAINERS[name](layer="features.99")
    with pytest.raises(ValueError, match=r"features\.6"):
        explainer.check(model)
    before = _snapshot(model)
    with pytest.raises(ValueError, match="features.99"):
        explainer(model, x, 0)
    _assert_same(before, _snapshot(model))


def test_hooks_removed_when_forward_fails() -> None:
    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, _ = make("small")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.inner.features(x)
            raise RuntimeError("boom")

    model = Exploding()
    x = torch.rand(2, 1, 28, 28)
    for name in EXPLAINERS:
        before = _snapshot(model)
        with pytest.raises(Exception, match="boom"):
            EXPLAINERS[name]()(model, x, 0)
        _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_picklable_and_registered(name: str) -> None:
    explainer = EXPLAINERS[name]()
    clone = pickle.loads(pickle.dumps(explainer))
    assert repr(clone) == repr(explainer)
    assert isinstance(explainer, Explainer)
    assert explainer.registry_name in available_explainers()
    assert isinstance(
        get_explainer(explainer.registry_name) if name not in ("smoothgrad", "vargrad") else explainer, Explainer
    )


def test_registry_names() -> None:
    assert get_explainer("grad_cam", layer="features.6").layer == "features.6"
    assert type(get_explainer("integrated_gradients")) is IntegratedGradients
    with pytest.raises(ValueError, match="grad_cam"):
        get_explainer("grad_cma")


def test_non_tensor_and_unbatched_inputs_raise() -> None:
    model, x = make("small")
    with pytest.raises(TypeError):
        Saliency()(model, x.numpy(), 0)
    with pytest.raises(ValueError, match="batch"):
        Saliency()(model, x[0, 0, 0], 0)
