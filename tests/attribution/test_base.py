from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from torch import nn

from lightning_xai.attribution.base import (
    chunks,
    get_explainer,
    get_layer,
    last_conv_layer_name,
    observe,
    resolve_target,
    select_output,
    value_bounds,
)
from tests.helpers.models import make


def test_resolve_target_forms() -> None:
    outputs = torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 1.0]])
    assert resolve_target(None, outputs).tolist() == [1, 0]
    assert resolve_target(2, outputs).tolist() == [2, 2]
    assert resolve_target(torch.tensor([0, 2]), outputs).tolist() == [0, 2]
    assert resolve_target(torch.tensor(1), outputs).tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"\[0, 3\), but got 1 distinct out-of-range values: \[3\]"):
        resolve_target(3, outputs)
    with pytest.raises(ValueError, match="one class index per input"):
        resolve_target(torch.tensor([0, 1, 2]), outputs)
    with pytest.raises(TypeError):
        resolve_target(torch.tensor([0.0, 1.0]), outputs)
    with pytest.raises(TypeError):
        resolve_target(True, outputs)
    with pytest.raises(ValueError, match="batch, classes"):
        resolve_target(0, torch.zeros(2, 3, 4))


def test_get_layer_error_lists_names_and_suggests() -> None:
    model, _ = make("small")
    assert isinstance(get_layer(model, "features.6"), nn.Conv2d)
    with pytest.raises(ValueError, match=r"Did you mean 'features.6'.*Valid layer names: 'features'"):
        get_layer(model, "features.66")
    assert last_conv_layer_name(model) == "features.6"
    assert last_conv_layer_name(make("resnet18")[0]) == "layer4.1.conv2"
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        last_conv_layer_name(nn.Sequential(nn.Linear(2, 2)))


def test_observe_restores_everything_on_error() -> None:
    model, x = make("small")
    model.train()
    model.features[0].eval()
    p0 = model.fc.weight
    p0.requires_grad_(False)
    grad = torch.ones_like(model.fc.bias)
    model.fc.bias.grad = grad
    bn = model.features[3]
    stats = bn.running_mean.clone()
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="boom"):
        with observe(model) as ctx:
            assert not model.training and not model.features[0].training
            assert not any(p.requires_grad for p in model.parameters())
            ctx.add_hook(model.fc.register_forward_hook(lambda *a: None))
            torch.rand(10)  # consume RNG
            model(x)  # eval mode: BatchNorm statistics do not move
            raise RuntimeError("boom")
    assert model.training and not model.features[0].training and model.features[3].training
    assert not p0.requires_grad and model.fc.bias.requires_grad
    assert model.fc.bias.grad is grad
    assert torch.equal(bn.running_mean, stats)
    assert torch.equal(torch.get_rng_state(), rng)
    assert len(model.fc._forward_hooks) == 0


def test_observe_without_eval_mode_restores_batchnorm_statistics() -> None:
    model, x = make("small")
    model.train()
    bn = model.features[3]
    stats = {k: v.clone() for k, v in bn.state_dict().items()}
    with observe(model, eval_mode=False):
        assert model.training
        model(x)  # a training-mode forward updates the running statistics...
        assert not torch.equal(bn.running_mean, stats["running_mean"])
    for k, v in bn.state_dict().items():  # ...and they are put back
        assert torch.equal(v, stats[k]), k


def test_observe_leaves_inference_mode() -> None:
    model, x = make("small")
    with torch.inference_mode():
        x_inf = x.clone()
        with observe(model) as ctx:
            assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
            leaf = ctx.prepare(x_inf)
            (g,) = torch.autograd.grad(model(leaf)[:, 0].sum(), leaf)
        assert torch.is_inference_mode_enabled()
    assert g.shape == x.shape and g.abs().sum() > 0


def test_chunks() -> None:
    assert [(s.start, s.stop) for s in chunks(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert [(s.start, s.stop) for s in chunks(3, None)] == [(0, 3)]


# --------------------------------------------------------------------------------------------
# output= (models returning a tuple, dict or dataclass)
# --------------------------------------------------------------------------------------------
@dataclass
class _Out:
    logits: torch.Tensor
    features: torch.Tensor


class _Pair(NamedTuple):
    logits: torch.Tensor
    aux: torch.Tensor


def test_select_output_forms() -> None:
    logits = torch.randn(2, 3)
    assert select_output(logits) is logits
    assert select_output((logits, None), 0) is logits
    assert select_output([None, logits], -1) is logits
    assert select_output({"logits": logits}, "logits") is logits
    assert select_output(_Out(logits, logits), "logits") is logits
    assert select_output(_Pair(logits, logits), "logits") is logits
    assert select_output(_Pair(logits, logits), 0) is logits
    torch.testing.assert_close(select_output({"a": logits}, lambda raw: raw["a"] * 2), logits * 2)


def test_select_output_errors_say_how_to_use_it() -> None:
    logits = torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"returned a tuple.*pass `output=`.*int index"):
        select_output((logits, logits))
    with pytest.raises(TypeError, match=r"returned a dict \(with fields 'logit'\).*`output=`"):
        select_output({"logit": logits})
    with pytest.raises(TypeError, match=r"_Out \(with fields 'logits', 'features'\)"):
        select_output(_Out(logits, logits))
    with pytest.raises(ValueError, match=r"not a key.*Did you mean 'logits'"):
        select_output({"logits": logits}, "logit")
    with pytest.raises(ValueError, match=r"no attribute 'scores'.*'logits', 'features'"):
        select_output(_Out(logits, logits), "scores")
    with pytest.raises(ValueError, match="out of range"):
        select_output((logits,), 3)
    with pytest.raises(ValueError, match="indexes a tuple"):
        select_output({"a": logits}, 0)
    with pytest.raises(TypeError, match="to be the \\[B, C\\] scores tensor, but got a NoneType"):
        select_output((None, logits), 0)
    with pytest.raises(TypeError, match="Expected argument `output`"):
        select_output(logits, 1.5)  # type: ignore[arg-type]


class _TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner, _ = make("small")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner(x), x.mean()


def test_every_entry_point_accepts_output() -> None:
    from lightning_xai.attribution import GradCAM, IntegratedGradients, Saliency

    wrapped = _TupleModel()
    model, x = wrapped.inner, make("small")[1]
    with pytest.raises(TypeError, match=r"returned a tuple.*`output=`"):
        Saliency()(wrapped, x, 1)
    torch.testing.assert_close(Saliency()(wrapped, x, 1, output=0), Saliency()(model, x, 1))
    # layer names are those of the wrapped model: no prefix added by the selection
    torch.testing.assert_close(
        GradCAM("inner.features").attribute_layer(wrapped, x, 1, output=0),
        GradCAM("features").attribute_layer(model, x, 1),
    )
    ig = IntegratedGradients(n_steps=4)
    a, d = ig.with_delta(wrapped, x, 1, output=lambda raw: raw[0])
    b, e = ig.with_delta(model, x, 1)
    torch.testing.assert_close((a, d), (b, e))
    with observe(wrapped, output=0) as ctx:
        assert wrapped(ctx.prepare(x)).shape == (4, 10)
    assert isinstance(wrapped(x), tuple)  # the selection is gone after the block
    with pytest.raises(TypeError, match="Expected argument `output`"):
        Saliency()(wrapped, x, 1, output=[0])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# shared validation
# --------------------------------------------------------------------------------------------
def test_seed_and_chunk_validation_is_shared() -> None:
    from lightning_xai.attribution import IntegratedGradients, NoiseTunnel, Saliency, ScoreCAM

    messages = []
    for build in (lambda: IntegratedGradients(seed=1.5), lambda: NoiseTunnel(Saliency(), seed=1.5)):
        with pytest.raises(TypeError, match=r"Expected argument `seed` to be an int, but got 1.5") as info:
            build()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    for build in (
        lambda: IntegratedGradients(internal_batch_size=0),
        lambda: NoiseTunnel(Saliency(), internal_batch_size=0),
        lambda: ScoreCAM(internal_batch_size=0),
    ):
        with pytest.raises(ValueError, match=r"Expected argument `internal_batch_size` to be an int >= 1, but got 0"):
            build()


def test_value_bounds_is_the_one_range_helper() -> None:
    from lightning_xai.attribution import gradient, path

    assert not hasattr(gradient, "_value_range") and not hasattr(path, "_value_bounds")
    x = torch.tensor([[[1.0, 5.0]], [[-2.0, -1.0]]])
    low, spread = value_bounds(x)
    assert low.shape == spread.shape == (2, 1, 1)
    assert low.flatten().tolist() == [1.0, -2.0] and spread.flatten().tolist() == [4.0, 1.0]


def test_unknown_explainer_did_you_mean() -> None:
    with pytest.raises(ValueError, match=r"Did you mean 'integrated_gradients'"):
        get_explainer("integrated_gradient")
