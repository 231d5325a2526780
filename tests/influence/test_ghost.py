"""Ghost norms: per-example squared gradient norms and probe inner products from layer inputs and
output gradients equal explicit torch.func per-example gradients, layer type by layer type."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from lightning_xai.influence.ghost import GhostGradients, countable_layers

B = 5


def _func_grads(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Explicit per-example gradients ``{name: [B, *shape]}`` of each example's own loss."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def one(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, (p, buffers), (xi[None],)), yi[None])

    return vmap(grad(one), in_dims=(None, 0, 0))(params, x, y)


def _ghost(model: nn.Module, x: Tensor, y: Tensor, probe=None, weight=None) -> GhostGradients:
    ghost = GhostGradients(model, countable_layers(model), weight=weight)
    ghost.set_probe(probe)
    with ghost.attached():
        ghost.start(scale=x.shape[0])  # mean-reduced loss: batch size times the example's share
        F.cross_entropy(model(x), y).backward()
        ghost.finish()
    assert not ghost._handles
    return ghost


class Tokens(nn.Module):
    """A linear layer over tokens (Gram form when few tokens, formed gradient when many), called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.proj(x)).mean(1)
        return self.head(h) + self.head(torch.sin(h))  # the head's gradient is the sum over both calls


class Convs2d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 6, 3, groups=2, dilation=2, padding=2, padding_mode="reflect", bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.c3 = nn.Conv2d(6, 16, 3, stride=2)  # 2x2 positions: the Gram form (c1, c2: formed gradients)
        self.fc = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn(self.c2(torch.tanh(self.c1(x)))), inplace=True)  # in place on the BN output
        return self.fc(self.c3(h).mean((2, 3)))


class Convs1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding="same")
        self.c2 = nn.Conv1d(4, 4, 5, stride=2, padding=2, padding_mode="circular")
        self.bn = nn.BatchNorm1d(4)
        self.fc = nn.Linear(4 * 5, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(self.c2(torch.tanh(self.c1(x)))).flatten(1))


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(7, 4, padding_idx=0)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.tanh(self.emb(x)).mean(1))


def _case(name: str) -> tuple[nn.Module, Tensor]:
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), torch.randn(B, 6)
    if name == "tokens_gram":
        return Tokens(), torch.randn(B, 2, 4)  # 2 * (4 + 8) < 4 * 8
    if name == "tokens_formed":
        return Tokens(), torch.randn(B, 7, 4)
    if name == "conv2d":
        model = Convs2d()
    elif name == "conv1d":
        model = Convs1d()
    else:
        return Embed(), torch.tensor([[1, 2, 2, 0, 5], [3, 3, 3, 3, 0], [6, 1, 0, 0, 0], [2, 4, 6, 4, 2], [5, 5, 1, 2, 3]])
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    model.eval()  # BatchNorm on running statistics: per-example gradients are well defined
    return model, torch.randn(B, 3, 9, 9) if name == "conv2d" else torch.randn(B, 2, 10)


CASES = ["mlp", "tokens_gram", "tokens_formed", "conv2d", "conv1d", "embedding"]


@pytest.mark.parametrize("name", CASES)
def test_sq_norms_and_probe_dots_equal_torch_func(name: str) -> None:
    model, x = _case(name)
    model = model.double()
    if x.is_floating_point():
        x = x.double()
    y = torch.arange(B) % 3
    grads = _func_grads(model, x, y)
    lrs = {n: 0.1 * (k + 1) for k, n in enumerate(grads)}  # a different weight per parameter
    by_id = {id(p): lrs[n] for n, p in model.named_parameters()}
    expected = sum(lrs[n] * g.flatten(1).pow(2).sum(1) for n, g in grads.items())
    gen = torch.Generator().manual_seed(1)
    probe_flat = {n: torch.randn(3, *g.shape[1:], generator=gen, dtype=g.dtype) for n, g in grads.items()}
    probe = {}
    for layer, module in countable_layers(model).items():
        probe[layer] = {p: probe_flat[f"{layer}.{p}" if layer else p] for p, _ in module.named_parameters(recurse=False)}
    expected_dots = sum(lrs[n] * g.flatten(1) @ probe_flat[n].flatten(1).T for n, g in grads.items())
    ghost = _ghost(model, x, y, probe=probe, weight=lambda p: by_id[id(p)])
    torch.testing.assert_close(ghost.sq_norms, expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(ghost.dots, expected_dots, rtol=1e-10, atol=1e-12 * float(expected_dots.abs().max()))
    # the test can fail: a missing factor of the batch size (the mean-loss share) is caught
    assert not torch.allclose(ghost.sq_norms / B**2, expected, rtol=1e-3)


def test_batchnorm_in_training_mode_is_each_examples_share() -> None:
    """With batch statistics the examples interact; g_i is the gradient w.r.t. example i's own
    copy of the affine parameters (their sum is the batch gradient)."""
    torch.manual_seed(0)
    bn, fc = nn.BatchNorm2d(3).double(), nn.Linear(3 * 16, 2).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    model = nn.Sequential(bn, nn.ReLU(), nn.Flatten(), fc).train()
    x, y = torch.randn(B, 3, 4, 4, dtype=torch.float64), torch.arange(B) % 2
    w = bn.weight.detach().expand(B, 3).clone().requires_grad_(True)
    b = bn.bias.detach().expand(B, 3).clone().requires_grad_(True)
    h = F.batch_norm(x, None, None, training=True, eps=bn.eps) * w[:, :, None, None] + b[:, :, None, None]
    loss = F.cross_entropy(fc(F.relu(h).flatten(1)), y, reduction="sum")
    gw, gb = torch.autograd.grad(loss, (w, b))
    ghost = GhostGradients(model, {"0": bn})
    with ghost.attached():
        ghost.start(scale=B)
        F.cross_entropy(model(x), y).backward()
        ghost.finish()
    torch.testing.assert_close(ghost.sq_norms, (gw**2).sum(1) + (gb**2).sum(1), rtol=1e-10, atol=0)


def test_unsupported_layer_is_named() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"'1' \(LayerNorm\)"):
        countable_layers(model)
    with pytest.warns(UserWarning, match=r"'1' \(LayerNorm\)"):
        assert set(countable_layers(model, on_unsupported="warn")) == {"0", "2"}
    model[1].requires_grad_(False)  # frozen: nothing to count
    assert set(countable_layers(model)) == {"0", "2"}
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    tied[1].weight = tied[0].weight
    with pytest.raises(ValueError, match="shares a parameter"):
        countable_layers(tied)


def test_hooks_idle_outside_a_step_and_removed() -> None:
    model, x = _case("mlp")
    ghost = GhostGradients(model, countable_layers(model))
    with ghost.attached():
        model(x).sum().backward()  # not started: nothing kept
        assert ghost._calls == {} and ghost.sq_norms is None
    assert all(not m._forward_hooks for m in model.modules())
