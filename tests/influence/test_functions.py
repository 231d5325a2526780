"""Influence functions against an explicit inverse Hessian written out by hand for softmax
(multinomial logistic) regression: no torch.func in the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_xai.errors import LightningXAIError
from lightning_xai.influence import InfluenceFunction
from tests.attribution.test_contract import _assert_same, _snapshot, _training_like

D, C, N_TRAIN, N_TEST, DAMPING = 3, 3, 30, 4, 0.05


def _data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_TRAIN + N_TEST, D, generator=gen, dtype=torch.float64) * 0.7
    y = torch.randint(0, C, (N_TRAIN + N_TEST,), generator=gen)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _reference(weight: torch.Tensor, bias: torch.Tensor, x, y, xt, yt, damping: float) -> torch.Tensor:
    """-g_test^T (H + damping I)^-1 g_train for softmax regression, with
    grad = (p - e_y) x~^T and H = mean_i (diag p_i - p_i p_i^T) (x) x~_i x~_i^T, x~ = [x, 1]."""

    def augmented(a: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)

    def grads(a, labels):  # [n, C*(D+1)] in (class, feature) order
        p = torch.softmax(a @ weight.T + bias, dim=1)
        err = p - torch.eye(C, dtype=a.dtype)[labels]
        return torch.einsum("nc,nj->ncj", err, augmented(a)).reshape(a.shape[0], -1)

    p = torch.softmax(x @ weight.T + bias, dim=1)
    hessian = torch.zeros(C * (D + 1), C * (D + 1), dtype=x.dtype)
    for pi, xi in zip(p, augmented(x)):
        hessian += torch.kron(torch.diag(pi) - torch.outer(pi, pi), torch.outer(xi, xi))
    hessian = hessian / x.shape[0] + damping * torch.eye(C * (D + 1), dtype=x.dtype)
    scores = -grads(xt, yt) @ torch.linalg.inv(hessian) @ grads(x, y).T
    return scores


def _model() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(D, C).double()


@pytest.mark.parametrize(
    ("solver", "kwargs", "rel"),
    [
        ("exact", {}, 1e-9),
        ("cg", {"tol": 1e-12, "max_iter": 100}, 1e-8),
        ("lissa", {"scale": 1.0, "max_iter": 400}, 1e-6),
    ],
)
def test_equals_explicit_inverse_hessian(solver: str, kwargs: dict, rel: float) -> None:
    x, y, xt, yt = _data()
    model = _model()
    ours = InfluenceFunction(solver=solver, damping=DAMPING, **kwargs).scores(model, x, y, xt, yt)
    expected = _reference(model.weight.detach(), model.bias.detach(), x, y, xt, yt, DAMPING)
    torch.testing.assert_close(ours, expected, rtol=rel, atol=rel * float(expected.abs().max()))


class _TwoNames(nn.Module):
    """A two-layer net whose head is registered under two names (tied parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(D, D), nn.Tanh())
        self.out = nn.Linear(D, C)
        self.head = self.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_last_layer_of_a_network_and_separate_hessian_set() -> None:
    """layers=["head"]: the Hessian is over the head only, on the (fixed) features; H from other data."""
    x, y, xt, yt = _data(1)
    torch.manual_seed(1)
    model = _TwoNames().double()
    hx, hy, _, _ = _data(2)
    ours = InfluenceFunction(layers=["head"], solver="cg", damping=DAMPING, tol=1e-12, batch_size=7).scores(
        model, x, y, xt, yt, hessian_inputs=hx, hessian_targets=hy
    )
    with torch.no_grad():
        features = model.body(torch.cat([x, xt, hx]))
    f, ft, fh = features[:N_TRAIN], features[N_TRAIN : N_TRAIN + N_TEST], features[N_TRAIN + N_TEST :]
    head = model.out
    # the reference's Hessian set is `fh`; its gradients are taken on (f, y) and (ft, yt)
    expected = _reference_with_hessian_set(head.weight.detach(), head.bias.detach(), f, y, ft, yt, fh, DAMPING)
    torch.testing.assert_close(ours, expected, rtol=1e-8, atol=1e-8 * float(expected.abs().max()))


def _reference_with_hessian_set(weight, bias, x, y, xt, yt, xh, damping):
    def augmented(a):
        return torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], dim=1)

    def grads(a, labels):
        p = torch.softmax(a @ weight.T + bias, dim=1)
        err = p - torch.eye(C, dtype=a.dtype)[labels]
        return torch.einsum("nc,nj->ncj", err, augmented(a)).reshape(a.shape[0], -1)

    p = torch.softmax(xh @ weight.T + bias, dim=1)
    size = C * (xh.shape[1] + 1)
    hessian = sum(
        torch.kron(torch.diag(pi) - torch.outer(pi, pi), torch.outer(xi, xi)) for pi, xi in zip(p, augmented(xh))
    )
    hessian = hessian / xh.shape[0] + damping * torch.eye(size, dtype=xh.dtype)
    return -grads(xt, yt) @ torch.linalg.inv(hessian) @ grads(x, y).T


def test_leaves_model_as_given_and_reports_bad_input() -> None:
    x, y, xt, yt = _data()
    model = _TwoNames().double()
    _training_like(model)
    before = _snapshot(model)
    InfluenceFunction(solver="cg", layers=["head"], max_iter=5).scores(model, x, y, xt, yt)
    _assert_same(before, _snapshot(model))
    with pytest.raises(LightningXAIError, match="damping"):  # a non-convex net's Hessian is indefinite
        InfluenceFunction(solver="cg", damping=0.0).scores(model, x, y, xt, yt)
    _assert_same(before, _snapshot(model))
    with pytest.raises(ValueError, match="max_exact_dim"):
        InfluenceFunction(solver="exact", max_exact_dim=10).scores(model, x, y, xt, yt)
    with pytest.raises(ValueError, match="solver"):
        InfluenceFunction(solver="newton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        InfluenceFunction(layers=["head"]).scores(model, x, y, xt, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="one value per example"):
        InfluenceFunction(layers=["head"], loss=lambda out, t: out.sum()).scores(model, x, y, xt, yt)
    with pytest.raises(ValueError, match="nope"):
        InfluenceFunction(layers=["nope"]).scores(model, x, y, xt, yt)
    with pytest.warns(UserWarning, match="conjugate gradients stopped"):
        InfluenceFunction(solver="cg", layers=["head"], max_iter=1, tol=1e-14).scores(model, x, y, xt, yt)
    with pytest.raises(LightningXAIError, match="scale"):
        InfluenceFunction(solver="lissa", layers=["head"], scale=0.01, max_iter=2000).scores(model, x, y, xt, yt)
