"""The one contract suite every explainer keeps.

To test a new method, add it to ``EXPLAINERS`` (it then runs on every model of ``MODELS``) or
append :class:`Case` entries to ``CASES`` (a method on chosen models, with options). Each case is
checked for: state restored (modes, ``requires_grad``, ``.grad``, weights, BatchNorm statistics,
RNG) and no hook left, also when the forward pass fails; the output's shape, device, dtype,
finiteness and content; the same map under an outer ``torch.inference_mode`` and for each input
explained alone (batch invariance); ``target=None`` is the prediction; bad targets raise; the
same map through ``output=`` on a model returning a dict; pickling keeps the configuration and
the map; the registry builds the class.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from lightning_xai.attribution import (
    CAM,
    LIME,
    LRP,
    RISE,
    XRAI,
    Anchors,
    CounterfactualInfill,
    Deconvnet,
    DeepLift,
    DeepTaylor,
    Explainer,
    ExtremalPerturbation,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    KernelSHAP,
    MeaningfulPerturbation,
    NoiseTunnel,
    Occlusion,
    PatternAttribution,
    PatternNet,
    PredictionDifference,
    Saliency,
    ScoreCAM,
    available_explainers,
    get_explainer,
)
from lightning_xai.attribution.base import _REGISTRY
from lightning_xai.modules import MaskingModelExplainer
from tests.helpers.models import contract_masker, make
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
    "masking_model": lambda: MaskingModelExplainer(contract_masker()),
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


@dataclass(frozen=True)
class Case:
    """One explainer on one model of ``tests.helpers.models.make``.

    Attributes:
        name: The explainer's id in test names.
        model: The model name (``small``, ``vgg``, ``resnet18``, ``shared_relu``, ``functional_relu``).
        build: Builds the explainer.
        nonzero: The map must not be all zero (off where a random model legitimately gives zeros).
    """

    name: str
    model: str
    build: Callable[[], Explainer]
    nonzero: bool = True

    @property
    def id(self) -> str:
        return f"{self.name}-{self.model}"


MODELS = ["small", "vgg", "resnet18"]
# models with one ReLU module reused, or functional ReLUs: for the methods that hook layers or ReLUs
RELU_MODELS = ["shared_relu", "functional_relu"]
RELU_METHODS = ["guided_backprop", "deconvnet", "grad_cam", "guided_grad_cam", "grad_cam_plus_plus", "score_cam", "cam"]
OVERRIDES: dict = {}
# The masking model reads the image too (vgg's and resnet18's inputs have 3 channels, small's 1) and
# resnet18's last conv has 512 channels.
OVERRIDES[("masking_model", "vgg")] = lambda: MaskingModelExplainer(contract_masker(in_channels=3))
OVERRIDES[("masking_model", "resnet18")] = lambda: MaskingModelExplainer(contract_masker(3, 512))
OVERRIDES.update(  # PatternNet / PatternAttribution need the patterns of each model
    {
        (name, model): (lambda cls=cls, model=model: cls(pattern_file(model)))
        for name, cls in (("pattern_net", PatternNet), ("pattern_attribution", PatternAttribution))
        for model in ("vgg", "resnet18")
    }
)
# Score-CAM needs one forward pass per channel and input: on resnet18 (64 to 512 channels a layer) it is
# the slowest case by far; test_cam.py checks it there against pytorch-grad-cam.
SKIP = {("score_cam", "resnet18")}
CASES: list[Case] = [
    Case(e, m, OVERRIDES.get((e, m), EXPLAINERS[e]))
    for m in MODELS
    for e in EXPLAINERS
    if not (e in NEEDS_GAP_HEAD and m == "vgg") and (e, m) not in SKIP
] + [Case(e, m, EXPLAINERS[e]) for m in RELU_MODELS for e in RELU_METHODS]
# other cases: CASES.append(Case("my_method", "small", lambda: MyMethod(option=1)))
# perturbation and surrogate explainers: many forward passes each, so on the two small models
PERTURBATION_EXPLAINERS = {
    "occlusion": lambda: Occlusion(window=(8, 8), stride=(6, 6)),
    "occlusion_channels": lambda: Occlusion(window=(1, 5, 5), stride=(1, 5, 5), baseline=0.5),
    "rise": lambda: RISE(n_masks=16, cell_size=8),
    "meaningful_perturbation": lambda: MeaningfulPerturbation(n_iter=2),
    "extremal_perturbation": lambda: ExtremalPerturbation(areas=[0.1, 0.3], n_iter=3),
    "prediction_difference": lambda: PredictionDifference(window=8, stride=8, n_samples=2),
    "counterfactual_infill": lambda: CounterfactualInfill("gaussian", n_iter=3),
    "lime": lambda: LIME(n_samples=16, segmentation="grid"),
    "kernel_shap": lambda: KernelSHAP(n_samples=16, segmentation="grid", baseline="mean"),
    "anchors": lambda: Anchors(
        threshold=0.8,
        max_anchor_size=2,
        segmentation="grid",
        segmentation_kwargs={"cell_size": 14},
        n_init=16,
        batch_size=16,
        max_samples=128,
    ),
    "xrai": lambda: XRAI(n_steps=4, scales=(50, 200)),
}
CASES += [Case(e, m, build) for m in ("small", "vgg") for e, build in PERTURBATION_EXPLAINERS.items()]
CASES += [Case(e, m, EXPLAINERS[e]) for m in RELU_MODELS for e in ("lrp", "deep_taylor", "deep_lift")]
# On resnet18 the propagation rules' maps differ between batch sizes by ~1e-5 of their maximum (float rounding of the
# batch-size-dependent convolutions, divided by small z+ denominators and DeepLift secants), beyond this suite's 1e-6:
# tests/attribution/test_propagation.py runs them on resnet18 with the same checks and that tolerance.
PROPAGATION_RESNET = {"lrp", "lrp_gamma_box", "lrp_alpha2_beta1", "deep_lift"}
CASES = [c for c in CASES if not (c.model == "resnet18" and c.name in PROPAGATION_RESNET)]


def _first_cases() -> list[Case]:
    """One case per explainer (its first), for the checks that need one model."""
    seen: dict[str, Case] = {}
    for case in CASES:
        seen.setdefault(case.name, case)
    return list(seen.values())


def _model(case: Case) -> tuple[nn.Module, torch.Tensor]:
    # resnet18: 2 x 3 x 64 x 64 (layer4 is 2 x 2). At 48 x 48 the CPU max-pool breaks ties between the
    # zeros a ReLU leaves differently for a batch of 1 and of 2: gradients then differ by 5% of the max.
    model, x = make(case.model)
    return model, x


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


def _targets(x: torch.Tensor) -> torch.Tensor:
    return torch.arange(x.shape[0]) % 3


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_state_restored_shape_and_content(case: Case) -> None:
    model, x = _model(case)
    explainer = case.build()
    reference = explainer(model, x, _targets(x))
    _training_like(model)
    before = _snapshot(model)
    out = explainer(model, x, _targets(x))
    _assert_same(before, _snapshot(model))
    expected = (x.shape[0], 1, *x.shape[2:]) if explainer.region else tuple(x.shape)
    assert tuple(out.shape) == expected
    assert out.device == x.device and out.dtype == x.dtype
    assert not out.requires_grad
    assert torch.isfinite(out).all()
    if case.nonzero:
        assert out.abs().sum() > 0, "an all-zero map explains nothing"
    if explainer.region or not explainer.signed:
        assert out.min() >= 0, "an unsigned map has negative values"
    # the model's mode does not matter: eval-mode computation whatever the training state
    torch.testing.assert_close(out, reference)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_inference_mode_and_batch_invariance(case: Case) -> None:
    model, x = _model(case)
    explainer = case.build()
    target = _targets(x)
    reference = explainer(model, x, target)
    with torch.inference_mode():
        x_inf = x.clone()
        batched = explainer(model, x_inf, target)
        target_inf = target.clone()  # an inference tensor, as a validation hook makes one
    torch.testing.assert_close(batched, reference)
    torch.testing.assert_close(explainer(model, x, target_inf), reference)
    one_by_one = torch.cat([explainer(model, x[i : i + 1], target[i : i + 1]) for i in range(x.shape[0])])
    scale = float(reference.abs().max())
    torch.testing.assert_close(one_by_one, reference, rtol=1e-4, atol=1e-6 * max(scale, 1e-6))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_output_selection_gives_the_same_map(case: Case) -> None:
    """``output=`` on a model whose forward returns a dict: the same map, layer names unchanged."""
    model, x = _model(case)
    explainer = case.build()
    target = _targets(x)
    reference = explainer(model, x, target)
    plain = model.forward
    model.forward = lambda inputs: {"aux": inputs.mean(), "logits": plain(inputs)}  # type: ignore[method-assign]
    before = _snapshot(model)
    with pytest.raises(TypeError, match="output="):
        explainer(model, x, target)
    torch.testing.assert_close(explainer(model, x, target, output="logits"), reference)
    torch.testing.assert_close(explainer(model, x, target, output=lambda raw: raw["logits"]), reference)
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("case", _first_cases(), ids=lambda c: c.id)
def test_predicted_target_is_argmax(case: Case) -> None:
    model, x = _model(case)
    explainer = case.build()
    pred = model(x).argmax(dim=1)
    torch.testing.assert_close(explainer(model, x, None), explainer(model, x, pred), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", _first_cases(), ids=lambda c: c.id)
@pytest.mark.parametrize("bad", [10, -1, torch.tensor([0, 1]), 1.5])
def test_bad_target_raises_and_leaves_no_hook(case: Case, bad: object) -> None:
    model, x = _model(case)
    explainer = case.build()
    before = _snapshot(model)
    with pytest.raises((ValueError, TypeError)):
        explainer(model, x, bad)
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("name", list(LAYER_EXPLAINERS))
def test_bad_layer_name_lists_valid_names(name: str) -> None:
    model, x = make("small")
    explainer = LAYER_EXPLAINERS[name](layer="features.99")
    with pytest.raises(ValueError, match=r"Did you mean.*Valid layer names:.*'features\.6'"):
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
    for case in _first_cases():
        before = _snapshot(model)
        with pytest.raises(Exception, match="boom"):
            case.build()(model, x, 0)
        _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("case", _first_cases(), ids=lambda c: c.id)
def test_picklable_and_registered(case: Case) -> None:
    model, x = _model(case)
    explainer = case.build()
    clone = pickle.loads(pickle.dumps(explainer))
    assert type(clone) is type(explainer) and clone == explainer and repr(clone) == repr(explainer)
    target = _targets(x)
    torch.testing.assert_close(clone(model, x, target), explainer(model, x, target), rtol=0, atol=0)
    assert explainer.registry_name in available_explainers()
    assert _REGISTRY[explainer.registry_name] is type(explainer)


def test_registry_names() -> None:
    assert get_explainer("grad_cam", layer="features.6").layer == "features.6"
    assert type(get_explainer("integrated_gradients")) is IntegratedGradients
    with pytest.raises(ValueError, match=r"Did you mean 'grad_cam'"):
        get_explainer("grad_cma")


def test_non_tensor_and_unbatched_inputs_raise() -> None:
    model, x = make("small")
    with pytest.raises(TypeError):
        Saliency()(model, x.numpy(), 0)
    with pytest.raises(ValueError, match="batch"):
        Saliency()(model, x[0, 0, 0], 0)
