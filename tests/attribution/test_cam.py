"""CAM family: oracles (captum 0.9, pytorch-grad-cam 1.5.7), known answers, configuration errors
and the explainer contract (no hook left, state restored, inference mode, batch invariance).

Oracle runs use float64 copies of the shared test models on identical weights and inputs.
pytorch-grad-cam normalises every map per image (``scale_cam_image``: ``(m - min) / (max + 1e-7)``
after the shift, per layer and again after aggregating) and resizes with ``cv2.resize`` in float32;
our explainers return raw maps, so the comparison applies the same normalisation to our
layer-resolution map around our bilinear :func:`upsample` (which equals ``cv2.resize`` to float32
rounding, tested below).
"""

from __future__ import annotations

import copy
import functools
import pickle
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import get_explainer, observe
from lightning_xai.attribution.cam import (
    CAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    ScoreCAM,
    activated_last_conv,
    capture_layer,
    default_cam_layer,
    forward_chunk_rows,
    global_pool_name,
    layer_activation_and_gradient,
    minmax_normalize,
    pooled_layer,
    upsample,
)
from lightning_xai.errors import LightningXAIError
from tests.helpers.models import make

pytestmark = pytest.mark.numerics

# targets whose Grad-CAM map is not all zero on the seeded models (so the comparisons see signal)
TARGETS = {
    "small": [2, 4, 5, 6],
    "resnet18": [0, 1],
    "vgg": [2, 3, 4],
    "shared_relu": [0, 1, 2],
    "functional_relu": [0, 1, 2],
}
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """resnet18 runs ~20x slower with 2 intra-op threads than with 1 when the cores are shared
    with other processes (OpenMP threads spin-wait); restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def _made(name: str) -> tuple[nn.Module, Tensor]:
    return make(name)


def _double(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    """A float64 copy of a shared test model, its input and targets with non-zero Grad-CAM maps."""
    model, x = _made(name)
    return copy.deepcopy(model).double(), x.double(), torch.tensor(TARGETS[name])


def _no_inplace(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def _N(maps: Tensor) -> Tensor:
    return minmax_normalize(maps)


def _pgc(cls_name: str, model: nn.Module, layers: list[str], x: Tensor, target: Tensor, **attrs: object) -> Tensor:
    """Run a pytorch-grad-cam method on a copy of ``model``; returns ``[B, 1, H, W]`` float64."""
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = copy.deepcopy(model)  # it calls .backward() and writes parameter .grad
    cam = getattr(pgc, cls_name)(model=model, target_layers=[model.get_submodule(n) for n in layers])
    for key, value in attrs.items():
        setattr(cam, key, value)
    try:
        out = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(c)) for c in target])
    finally:
        cam.activations_and_grads.release()
    result = torch.from_numpy(np.asarray(out)).double()[:, None]
    assert (result.flatten(1).amax(1) > 0.5).all(), "the oracle map of some image is all zero: pick other targets"
    return result


def _layer(explainer: GradCAM, model: nn.Module, x: Tensor) -> str:
    """The module an oracle hooks for ``explainer``: the named producer of the default feature map."""
    return default_cam_layer(model, x) if explainer.layer is None else explainer.layer_name(model)


def _as_pgc(explainer: GradCAM, model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """Our map with pytorch-grad-cam's post-processing: N(resize(N(layer map))), then N again."""
    layer_map = explainer.attribute_layer(model, x, target)
    return _N(upsample(_N(layer_map), x.shape[-2:]))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def test_upsample_matches_cv2_resize() -> None:
    cv2 = pytest.importorskip("cv2")
    gen = torch.Generator().manual_seed(0)
    for (h, w), (H, W) in [((7, 7), (28, 28)), ((4, 5), (32, 40)), ((2, 2), (64, 64)), ((3, 3), (28, 28))]:
        maps = torch.rand(1, 1, h, w, generator=gen, dtype=torch.float64).float()
        ours = upsample(maps.double(), (H, W))
        theirs = torch.from_numpy(cv2.resize(maps[0, 0].numpy(), (W, H))).double()
        torch.testing.assert_close(ours[0, 0], theirs, rtol=0, atol=2e-7)
    same = torch.rand(2, 3, 5, 6)
    assert upsample(same, (5, 6)) is same
    with pytest.raises(ValueError, match="shape"):
        upsample(torch.rand(5, 6), (10, 12))
    with pytest.raises(ValueError, match="interpolate_mode"):
        upsample(same, (10, 12), mode="cubic")


def test_minmax_normalize() -> None:
    maps = torch.tensor([[[[1.0, 3.0], [2.0, 5.0]]], [[[4.0, 4.0], [4.0, 4.0]]]])
    out = minmax_normalize(maps, eps=0.0).nan_to_num()
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert minmax_normalize(maps)[1].abs().max() == 0  # constant maps become zero, not NaN


# --------------------------------------------------------------------------------------------
# known answers on a hand-weighted model
# --------------------------------------------------------------------------------------------
class Tiny(nn.Module):
    """x -> 1x1 conv with channel weights (1, 2) -> GAP -> linear [[1, -1], [0.5, 1]]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, 2.0]).view(2, 1, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 1.0]]))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.conv(x))))


TINY_X = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]]]])


def test_known_answer_cam_and_grad_cam() -> None:
    model = Tiny()
    # class 1: relu(0.5 * x + 1 * 2x) = relu(2.5 x); class 0: relu(x - 2x) = relu(-x)
    expected_cam = {1: torch.tensor([[2.5, 0.0], [7.5, 10.0]]), 0: torch.tensor([[0.0, 2.0], [0.0, 0.0]])}
    for c, cam in expected_cam.items():
        torch.testing.assert_close(CAM()(model, TINY_X, c)[0, 0], cam)
        torch.testing.assert_close(CAM(layer="conv", fc="fc")(model, TINY_X, c)[0, 0], cam)
        # dS/dA_k = w_ck / (h w) with h w = 4
        torch.testing.assert_close(GradCAM()(model, TINY_X, c)[0, 0], cam / 4)
    # the prediction: scores are (mean(x) - 2 mean(x), 0.5 mean(x) + 2 mean(x)) = (-1.5, 3.75)
    torch.testing.assert_close(GradCAM()(model, TINY_X)[0, 0], expected_cam[1] / 4)


def test_known_answer_grad_cam_plus_plus() -> None:
    model = Tiny()
    # class 1: g_k = w_1k / 4 everywhere; sum_ij A_k = (6, 12)
    weights = []
    for g, total in [(0.5 / 4, 6.0), (1.0 / 4, 12.0)]:
        alpha = g**2 / (2 * g**2 + total * g**3 + 1e-6)
        weights.append(4 * alpha * g)
    expected = (weights[0] * TINY_X[0, 0] + weights[1] * 2 * TINY_X[0, 0]).clamp_min(0)
    torch.testing.assert_close(GradCAMPlusPlus()(model, TINY_X, 1)[0, 0], expected)


# --------------------------------------------------------------------------------------------
# oracles
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "layer"),
    [("small", None), ("resnet18", None), ("resnet18", "layer4"), ("vgg", None), ("vgg", "features.3")],
)
def test_grad_cam_matches_captum(name: str, layer: str | None) -> None:
    captum = pytest.importorskip("captum.attr")
    model, x, target = _double(name)
    explainer = GradCAM(layer)
    layer_name = _layer(explainer, model, x)
    layer_gc = captum.LayerGradCam(model, model.get_submodule(layer_name))
    theirs = layer_gc.attribute(x.clone(), target=target, relu_attributions=True)
    torch.testing.assert_close(explainer.attribute_layer(model, x, target), theirs, rtol=RTOL, atol=0)
    full = captum.LayerAttribution.interpolate(theirs, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    torch.testing.assert_close(explainer(model, x, target), full, rtol=RTOL, atol=0)


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
@pytest.mark.parametrize(("name", "layer"), [("small", None), ("resnet18", None), ("resnet18", "layer4")])
def test_matches_pytorch_grad_cam(cls: type[GradCAM], name: str, layer: str | None) -> None:
    model, x, target = _double(name)
    explainer = cls(layer)
    theirs = _pgc(cls.__name__, model, [_layer(explainer, model, x)], x, target)
    torch.testing.assert_close(_as_pgc(explainer, model, x, target), theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("cls", [GradCAM, GradCAMPlusPlus])
def test_inplace_relu_semantics_vgg(cls: type[GradCAM]) -> None:
    """The map is of the layer's true output even when ReLU(inplace=True) follows it (as captum).

    pytorch-grad-cam agrees once in-place is disabled, or when the ReLU module is explained. On the
    in-place model its CPU hook keeps an alias that the ReLU overwrites: it weights the post-ReLU
    activation by the gradient w.r.t. the pre-ReLU output; we reproduce that exactly to pin the
    documented difference.
    """
    model, x, target = _double("vgg")
    conv = GradCAM("last_conv").layer_name(model)
    assert conv == "features.5" and model.features[6].inplace
    ours = cls(conv)
    # 1. identical to the oracle on the same weights without in-place ReLUs
    theirs = _pgc(cls.__name__, _no_inplace(model), [conv], x, target)
    torch.testing.assert_close(_as_pgc(ours, model, x, target), theirs, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(ours(model, x, target), ours(_no_inplace(model), x, target), rtol=1e-12, atol=0)
    # 2. explaining the in-place ReLU module itself agrees with the oracle on the in-place model
    relu = cls("features.6")
    theirs_relu = _pgc(cls.__name__, model, ["features.6"], x, target)
    torch.testing.assert_close(_as_pgc(relu, model, x, target), theirs_relu, rtol=RTOL, atol=ATOL)
    # 3. the oracle at the conv of the in-place model mixes post-ReLU activations and pre-ReLU grads
    theirs_inplace = _pgc(cls.__name__, model, [conv], x, target)
    with observe(model) as ctx:
        act, grad, _ = layer_activation_and_gradient(model, ctx.prepare(x), target, conv, ctx)
    mixed = cls(conv)._weights(act.clamp_min(0), grad)
    mixed_map = (mixed[:, :, None, None] * act.clamp_min(0)).sum(1, keepdim=True).clamp_min(0)
    torch.testing.assert_close(_N(upsample(_N(mixed_map), x.shape[-2:])), theirs_inplace, rtol=RTOL, atol=ATOL)
    assert not torch.allclose(theirs_inplace, theirs, atol=1e-3)


@pytest.mark.parametrize(("name", "layer"), [("small", None), ("resnet18", "layer1"), ("vgg", "features.6")])
def test_score_cam_matches_pytorch_grad_cam(name: str, layer: str | None) -> None:
    # on vgg the last conv's (pre-ReLU) softmax-weighted map is all negative: explain its ReLU
    model, x, target = _double(name)
    if name == "resnet18":  # 64 masked forwards per image: keep it small (and non-square)
        x, target = x[:1, :, :32, :40], target[:1]
    explainer = ScoreCAM(layer, internal_batch_size=50)
    theirs = _pgc("ScoreCAM", model, [_layer(explainer, model, x)], x, target, batch_size=64)
    torch.testing.assert_close(_as_pgc(explainer, model, x, target), theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["small", "resnet18", "vgg"])
def test_full_grad_matches_pytorch_grad_cam(name: str) -> None:
    model, x, target = _double(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _pgc("FullGrad", model, [], x, target)
    ours = FullGrad()(model, x, target)
    assert ours.shape == (x.shape[0], 1, *x.shape[-2:])
    torch.testing.assert_close(_N(ours), theirs, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", ["small", "resnet18", "vgg"])
def test_guided_grad_cam_matches_captum(name: str) -> None:
    captum = pytest.importorskip("captum.attr")
    model, x, target = _double(name)
    explainer = GuidedGradCAM()
    layer = model.get_submodule(default_cam_layer(model, x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum.GuidedGradCam(model, layer).attribute(x.clone(), target=target).detach()
    ours = explainer(model, x, target)
    assert ours.shape == x.shape and theirs.abs().max() > 0
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=1e-12 * float(theirs.abs().max()))


# --------------------------------------------------------------------------------------------
# CAM: head detection
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "pooled"), [("small", "features"), ("resnet18", "layer4"), ("shared_relu", None)])
def test_cam_equals_grad_cam_up_to_scale(name: str, pooled: str | None) -> None:
    model, x, target = _double(name)
    cam = CAM().attribute_layer(model, x, target)
    if pooled is not None:
        torch.testing.assert_close(CAM(layer=pooled).attribute_layer(model, x, target), cam, rtol=1e-12, atol=0)
        grad_cam = GradCAM(pooled).attribute_layer(model, x, target)
        h, w = cam.shape[-2:]
        assert cam.abs().max() > 0
        torch.testing.assert_close(cam, h * w * grad_cam, rtol=1e-10, atol=1e-12)
    assert CAM()(model, x, target).shape == (x.shape[0], 1, *x.shape[-2:])


def test_cam_rejects_vgg_head() -> None:
    model, x = make("vgg")
    with pytest.raises(ValueError, match=r"global-average-pooling.*GradCAM"):
        CAM().check(model)
    with pytest.raises(ValueError, match="GradCAM"):
        CAM()(model, x)
    with pytest.raises(ValueError, match="is a Conv2d"):
        CAM(fc="features.0").check(model)


def test_cam_rejects_mlp_head_and_unpooled_layer() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 8),
        nn.ReLU(),
        nn.Linear(8, 2),
    )
    with pytest.raises(ValueError, match=r"'4'.*between"):
        CAM().check(model)
    with pytest.raises(ValueError, match="no nn.Linear"):
        CAM().check(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    # the conv before the ReLU is not what the pooling sees: the hooked forward catches it
    model, x = make("small")
    with pytest.raises(ValueError, match=r"not the\s+global average of layer 'features.6'"):
        CAM(layer="features.6")(model, x)


# --------------------------------------------------------------------------------------------
# configuration errors
# --------------------------------------------------------------------------------------------
ALL = [
    lambda layer: GradCAM(layer),
    lambda layer: GradCAMPlusPlus(layer),
    lambda layer: ScoreCAM(layer),
    lambda layer: CAM(layer),
    lambda layer: GuidedGradCAM(layer),
]


@pytest.mark.parametrize("build", ALL, ids=["grad_cam", "grad_cam++", "score_cam", "cam", "guided"])
def test_unknown_layer_lists_valid_names(build: Callable[[str], object]) -> None:
    model, x = make("small")
    explainer = build("features.66")
    valid = r"no layer named 'features.66'.*Did you mean.*Valid layer names:.*'features.6'"
    with pytest.raises(ValueError, match=valid):
        explainer.check(model)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="Valid layer names"):
        explainer(model, x)  # type: ignore[operator]


def test_argument_validation() -> None:
    with pytest.raises(TypeError, match="layer"):
        GradCAM(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        CAM(fc="")
    with pytest.raises(ValueError, match="interpolate_mode"):
        GradCAM(interpolate_mode="linear-ish")
    with pytest.raises(ValueError, match="internal_batch_size"):
        ScoreCAM(internal_batch_size=0)
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        GradCAM().check(nn.Sequential(nn.Linear(3, 2)))


def test_layer_errors_during_computation() -> None:
    model, x = make("shared_relu")
    with pytest.raises(LightningXAIError, match=r"'relu' was called 2 times"):
        GradCAM("relu")(model, x)
    model, x = make("vgg")
    with pytest.raises(LightningXAIError, match=r"\[B, C, H, W\]"):
        GradCAM("classifier.2")(model, x)  # the head's ReLU: [B, 32]
    with pytest.raises(ValueError, match="no spatial output"):
        GradCAM("classifier.1")(model, x)
    _assert_no_hooks(model)


def _assert_no_hooks(model: nn.Module) -> None:
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not getattr(m, "_backward_pre_hooks", None)


def test_target_none_is_prediction_and_score_cam_chunking() -> None:
    model, x, _ = _double("small")
    predicted = model(x).argmax(1)
    for explainer in (GradCAM(), CAM(), ScoreCAM(), FullGrad()):
        torch.testing.assert_close(explainer(model, x), explainer(model, x, predicted))
    whole = ScoreCAM(internal_batch_size=10_000)(model, x, 3)
    torch.testing.assert_close(ScoreCAM(internal_batch_size=1)(model, x, 3), whole, rtol=1e-10, atol=1e-12)


def test_capture_layer_keeps_true_output() -> None:
    model, x = make("vgg")
    with observe(model) as ctx:
        capture = capture_layer(ctx, model, "features.0", method="test")
        model(ctx.prepare(x))
        capture.remove()
        assert (capture.activation < 0).any()  # the following ReLU(inplace=True) ran on a clone
        expected = model.features[0](x)
        torch.testing.assert_close(capture.activation, expected)
    _assert_no_hooks(model)


def test_registry_and_pickle() -> None:
    for key, cls in [
        ("grad_cam", GradCAM),
        ("grad_cam_plus_plus", GradCAMPlusPlus),
        ("score_cam", ScoreCAM),
        ("cam", CAM),
        ("guided_grad_cam", GuidedGradCAM),
        ("full_grad", FullGrad),
    ]:
        assert type(get_explainer(key)) is cls
        assert cls.region is (cls is not GuidedGradCAM)
    explainer = ScoreCAM(layer="layer4", internal_batch_size=8)
    assert pickle.loads(pickle.dumps(explainer)) == explainer
    assert pickle.loads(pickle.dumps(GuidedGradCAM("layer4"))) == GuidedGradCAM("layer4")


# --------------------------------------------------------------------------------------------
# the default layer: the feature map the global pool consumes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "spec", "producer", "last_conv"),
    [
        ("small", "pool:input", "features", "features.6"),
        ("resnet18", "avgpool:input", "layer4", "layer4.1.conv2"),
        ("vgg", "features.6", "features.6", "features.5"),  # no global pool: the last conv's ReLU
        ("shared_relu", "pool:input", "pool:input", "conv2"),  # the reused ReLU module is not a producer
    ],
)
def test_default_layer_is_what_the_global_pool_consumes(name: str, spec: str, producer: str, last_conv: str) -> None:
    model, x = _made(name)
    assert pooled_layer(model) == spec
    assert default_cam_layer(model, x) in (producer, spec)
    assert GradCAM("last_conv").layer_name(model) == last_conv
    for cls in (GradCAM, GradCAMPlusPlus):
        default = cls().attribute_layer(model, x, 1)
        torch.testing.assert_close(default, cls(spec).attribute_layer(model, x, 1), rtol=0, atol=0)
        if producer != spec:
            torch.testing.assert_close(default, cls(producer).attribute_layer(model, x, 1), rtol=1e-6, atol=1e-7)


def test_default_cam_layer_torchvision_families() -> None:
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    model = mobilenet_v3_small(weights=None).eval()
    x = torch.rand(1, 3, 64, 64)
    # squeeze-and-excitation pools inside the blocks are not the head's pool
    assert global_pool_name(model) == "avgpool"
    assert default_cam_layer(model, x) == "features"
    assert activated_last_conv(model) == "features.12.2"  # its Hardswish, if the pool were functional


def test_default_family_agrees_with_cam() -> None:
    """CAM's map is h*w times Grad-CAM's at the pooled layer: with the defaults, the family agrees."""
    for name in ("small", "resnet18"):
        model, x, target = _double(name)
        cam = CAM().attribute_layer(model, x, target)
        grad_cam = GradCAM().attribute_layer(model, x, target)
        h, w = cam.shape[-2:]
        assert cam.abs().max() > 0
        torch.testing.assert_close(cam, h * w * grad_cam, rtol=1e-10, atol=1e-12)
        guided = GuidedGradCAM()(model, x, target)
        torch.testing.assert_close(guided, GuidedGradCAM(default_cam_layer(model, x))(model, x, target))


def test_a_layer_without_spatial_output_is_refused_or_warned() -> None:
    model, x = _made("resnet18")
    for cls in (GradCAM, ScoreCAM, GradCAMPlusPlus, GuidedGradCAM):
        with pytest.raises(ValueError, match=r"'avgpool'.*no spatial output.*constant"):
            cls("avgpool").check(model)
    with pytest.raises(ValueError, match="no spatial output"):
        CAM("avgpool").check(model)
    with pytest.warns(RuntimeWarning, match=r"1 x 1 output, so the map is constant"):
        GradCAM()(model, x[:, :, :32, :32], 0)  # layer4 is 1 x 1 at 32 x 32


def test_score_cam_chunk_default_is_sized_from_the_device() -> None:
    assert ScoreCAM().internal_batch_size is None
    assert forward_chunk_rows(torch.zeros(2, 3, 224, 224)) == 27
    assert forward_chunk_rows(torch.zeros(2, 1, 8, 8)) == 1024
    model, x, _ = _double("small")
    torch.testing.assert_close(
        ScoreCAM()(model, x, 3), ScoreCAM(internal_batch_size=1)(model, x, 3), rtol=1e-10, atol=1e-12
    )
