from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.attribution.base import (
    chunks,
    get_layer,
    last_conv_layer_name,
    observe,
    resolve_target,
)
from tests.helpers.models import make


def test_resolve_target_forms() -> None:
    outputs = torch.tensor([[0.1, 2.0, 0.3], [3.0, 0.0, 1.0]])
    assert resolve_target(None, outputs).tolist() == [1, 0]
    assert resolve_target(2, outputs).tolist() == [2, 2]
    assert resolve_target(torch.tensor([0, 2]), outputs).tolist() == [0, 2]
    assert resolve_target(torch.tensor(1), outputs).tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
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
