"""TracIn against captum's TracInCP / TracInCPFast on the same saved checkpoints and examples.

Agreement is measured relative to the largest score: ``|ours - captum| <= 1e-4 * max|captum|``
elementwise (train-test dot products cross zero, so a per-element relative bound would be
meaningless next to zero).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.errors import LightningXAIError
from lightning_xai.influence import TracIn
from tests.attribution.test_contract import _assert_same, _snapshot, _training_like
from tests.helpers.models import SmallCNN
from tests.helpers.tolerance import assert_same_top_k

pytestmark = pytest.mark.numerics

captum_tracin = pytest.importorskip("captum.influence")

N_TRAIN, N_TEST, CLASSES = 24, 5, 4


def _close(ours: torch.Tensor, theirs: torch.Tensor, rel: float = 1e-4) -> None:
    theirs = theirs.to(ours.dtype)
    scale = float(theirs.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=rel, atol=rel * scale)


def _model(bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN(1, CLASSES, width=4)
    if not bias:
        model.fc = nn.Linear(model.fc.in_features, CLASSES, bias=False)
    return model


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(N_TRAIN + N_TEST, 1, 8, 8, generator=gen)
    y = torch.randint(0, CLASSES, (N_TRAIN + N_TEST,), generator=gen)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def _train_checkpoints(model: nn.Module, x: torch.Tensor, y: torch.Tensor, root: Path) -> list[tuple[str, float]]:
    """Three epochs of SGD (BatchNorm in train mode updates its statistics); a checkpoint file after each."""
    lrs = [0.3, 0.2, 0.1]
    opt = torch.optim.SGD(model.parameters(), lr=lrs[0])
    checkpoints = []
    for epoch, lr in enumerate(lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        for i in range(0, len(x), 8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i : i + 8]), y[i : i + 8]).backward()
            opt.step()
        path = root / f"epoch{epoch}.pt"
        torch.save({"state_dict": model.state_dict(), "learning_rate": lr}, path)
        checkpoints.append((str(path), lr))
    model.eval()
    return checkpoints


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> dict:
    x, y, _, _ = data
    out = {}
    for bias in (True, False):
        model = _model(bias)
        root = tmp_path_factory.mktemp(f"ckpt_bias{bias}")
        out[bias] = (model, _train_checkpoints(model, x, y, root))
    return out


def _load(model: nn.Module, path: str) -> float:
    state = torch.load(path, weights_only=True)
    model.load_state_dict(state["state_dict"])
    return float(state["learning_rate"])


def _captum(model, checkpoints, x, y, layers=None, per_example=True, batch_size=8):
    oracle_model = copy.deepcopy(model).eval()
    reduction = "none" if per_example else "sum"
    return captum_tracin.TracInCP(
        oracle_model,
        TensorDataset(x, y),
        checkpoints=[p for p, _ in checkpoints],
        checkpoints_load_func=_load,
        loss_fn=nn.CrossEntropyLoss(reduction=reduction),
        batch_size=batch_size,
        layers=layers,
        sample_wise_grads_per_batch=not per_example,
    )


@pytest.mark.parametrize("layers", [None, ["features.3", "fc"], ["features.0"]], ids=["all", "bn+fc", "conv0"])
def test_matches_captum_tracincp(trained, data, layers) -> None:
    model, checkpoints = trained[True]
    x, y, xt, yt = data
    oracle = _captum(model, checkpoints, x, y, layers=layers)
    ours = TracIn(layers=layers, batch_size=5)
    _close(ours.self_influence(model, checkpoints, x, y), oracle.self_influence())
    theirs = oracle.influence((xt, yt), k=None)
    _close(ours.scores(model, checkpoints, x, y, xt, yt), theirs)
    # ranked on our scores, compared on captum's: near-ties may order either way (ties are ties)
    top = ours.proponents(model, checkpoints, x, y, xt, yt, k=3)
    assert_same_top_k(top.indices, theirs, 3, rtol=1e-4)
    bottom = ours.opponents(model, checkpoints, x, y, xt, yt, k=3)
    assert_same_top_k(bottom.indices, theirs, 3, largest=False, rtol=1e-4)


def test_captum_fast_batched_mode_leaves_batchnorm_out(trained, data) -> None:
    """captum's sample_wise_grads_per_batch=True sees only Conv2d/Linear parameters: it equals ours
    restricted to those layers, and differs from ours (and its own per-example mode) with every parameter."""
    model, checkpoints = trained[True]
    x, y, _, _ = data
    fast = _captum(model, checkpoints, x, y, per_example=False).self_influence()
    conv_linear = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    _close(TracIn(layers=conv_linear).self_influence(model, checkpoints, x, y), fast)
    everything = TracIn().self_influence(model, checkpoints, x, y)
    assert (everything - fast).abs().max() > 1e-3 * fast.abs().max()


def test_last_layer_form_matches_tracincp_fast(trained, data) -> None:
    model, checkpoints = trained[False]  # TracInCPFast counts the weight only: a bias-free last layer
    x, y, xt, yt = data
    oracle = captum_tracin.TracInCPFast(
        copy.deepcopy(model).eval(),
        final_fc_layer="fc",
        train_dataset=TensorDataset(x, y),
        checkpoints=[p for p, _ in checkpoints],
        checkpoints_load_func=_load,
        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
        batch_size=8,
    )
    ours = TracIn(layers=["fc"])
    _close(ours.self_influence(model, checkpoints, x, y), oracle.self_influence())
    _close(ours.scores(model, checkpoints, x, y, xt, yt), oracle.influence((xt, yt), k=None))


def test_last_layer_form_with_bias_matches_tracincp(trained, data) -> None:
    model, checkpoints = trained[True]
    x, y, xt, yt = data
    oracle = _captum(model, checkpoints, x, y, layers=["fc"])
    ours = TracIn(layers=["fc"])
    _close(ours.self_influence(model, checkpoints, x, y), oracle.self_influence())
    _close(ours.scores(model, checkpoints, x, y, xt, yt), oracle.influence((xt, yt), k=None))


def test_last_layer_form_equals_generic_path(trained, data) -> None:
    """The factored form and vmap(grad) give the same numbers (a wrapper hides the Linear type)."""
    model, checkpoints = trained[True]
    x, y, xt, yt = data
    fast = TracIn(layers=["fc"]).scores(model, checkpoints, x, y, xt, yt)
    generic = TracIn(layers=["fc", "pool"]).scores(model, checkpoints, x, y, xt, yt)  # two names: vmap path
    torch.testing.assert_close(fast, generic, rtol=1e-5, atol=1e-6)
    projected_fast = TracIn(layers=["fc"], projection_dim=32).scores(model, checkpoints, x, y, xt, yt)
    projected_generic = TracIn(layers=["fc", "pool"], projection_dim=32).scores(model, checkpoints, x, y, xt, yt)
    torch.testing.assert_close(projected_fast, projected_generic, rtol=1e-4, atol=1e-5)


def test_projection_correlates_with_exact(trained, data) -> None:
    model, checkpoints = trained[True]
    x, y, xt, yt = data
    exact = TracIn().scores(model, checkpoints, x, y, xt, yt)
    projected = TracIn(projection_dim=512, seed=3).scores(model, checkpoints, x, y, xt, yt)
    r = torch.corrcoef(torch.stack([exact.flatten(), projected.flatten()]))[0, 1]
    assert r > 0.95, f"correlation {r:.3f}"
    again = TracIn(projection_dim=512, seed=3).scores(model, checkpoints, x, y, xt, yt)
    assert torch.equal(projected, again)
    self_exact = TracIn().self_influence(model, checkpoints, x, y)
    self_proj = TracIn(projection_dim=512, seed=3).self_influence(model, checkpoints, x, y)
    assert torch.corrcoef(torch.stack([self_exact, self_proj]))[0, 1] > 0.95


def test_data_sources_and_batch_sizes_agree(trained, data) -> None:
    model, checkpoints = trained[True]
    x, y, xt, yt = data
    states = [(torch.load(p, weights_only=True)["state_dict"], lr) for p, lr in checkpoints]
    reference = TracIn(batch_size=64).self_influence(model, checkpoints, x, y)
    dataset = TensorDataset(x, y)
    for source, targets, size in ((dataset, None, 7), (DataLoader(dataset, batch_size=10), None, 4), (x, y, 1)):
        torch.testing.assert_close(TracIn(batch_size=size).self_influence(model, states, source, targets), reference)
    dict_loader = DataLoader([{"image": a, "label": b} for a, b in zip(x, y)], batch_size=6)
    scores = TracIn().scores(model, states, dict_loader, None, xt, yt)
    torch.testing.assert_close(scores, TracIn().scores(model, states, x, y, xt, yt))


def test_model_left_exactly_as_given(trained, data) -> None:
    model, checkpoints = trained[True]
    model = copy.deepcopy(model)
    x, y, xt, yt = data
    _training_like(model)
    before = _snapshot(model)
    for tracin in (TracIn(), TracIn(layers=["fc"]), TracIn(projection_dim=8)):
        tracin.self_influence(model, checkpoints, x, y)
        tracin.proponents(model, checkpoints, x, y, xt, yt, k=2)
        _assert_same(before, _snapshot(model))
    with torch.inference_mode():
        inside = TracIn().self_influence(model, checkpoints, x.clone(), y.clone())
    torch.testing.assert_close(inside, TracIn().self_influence(model, checkpoints, x, y))
    _assert_same(before, _snapshot(model))


class _Recorder(nn.Module):
    """Records whether autograd was on at each forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.grad_modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.grad_modes.append(torch.is_grad_enabled())
        return self.inner(x)


def _bad_calls(model, state, x, y):
    good = [(state, 0.1)]
    yield "at least one checkpoint", lambda: TracIn().self_influence(model, [], x, y)
    yield "positive learning rate", lambda: TracIn().self_influence(model, [(state, 0.1), (state, 0.0)], x, y)
    yield "positive learning rate", lambda: TracIn().self_influence(model, [(state, -1e-3)], x, y)
    yield "one value per example", lambda: TracIn(loss=nn.CrossEntropyLoss()).self_influence(model, good, x, y)
    yield "inner.fc2", lambda: TracIn(layers=["inner.fc2"]).self_influence(model, good, x, y)
    y_bad = y.clone()
    y_bad[-1] = CLASSES  # out of range in the last batch only
    yield r"\[0, 4\)", lambda: TracIn(batch_size=4).self_influence(model, good, x, y_bad)
    yield r"\[0, 4\)", lambda: TracIn().scores(model, good, x, y, x[:2], torch.tensor([0, -1]))
    yield "no checkpoint file", lambda: TracIn().self_influence(model, [("/nonexistent.pt", 0.1)], x, y)
    yield "misses", lambda: TracIn().self_influence(model, [({"inner.fc.weight": state["inner.fc.weight"]}, 0.1)], x, y)


def test_bad_input_raises_before_any_gradient(data) -> None:
    x, y, _, _ = data
    model = _Recorder(_model())
    state = model.state_dict()
    for message, call in _bad_calls(model, state, x, y):
        model.grad_modes.clear()
        with pytest.raises(ValueError, match=message):
            call()
        assert not any(model.grad_modes), f"a gradient pass ran before the error {message!r}"


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="huber"):
        TracIn(loss="huber")
    with pytest.raises(ValueError, match="projection_dim"):
        TracIn(projection_dim=0)
    with pytest.raises(TypeError, match="layers"):
        TracIn(layers=[3])
    with pytest.raises(ValueError, match="shuffled"):
        TracIn().self_influence(
            _model(),
            [(_model().state_dict(), 0.1)],
            DataLoader(TensorDataset(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)), shuffle=True),
        )


def test_failure_inside_the_model_is_a_lightning_xai_error(data) -> None:
    x, y, _, _ = data

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    model = Broken()
    with pytest.raises(LightningXAIError, match="TracIn"):
        TracIn().self_influence(model, [(model.state_dict(), 0.1)], x, y % 2)


class _Tied(nn.Module):
    """A weight shared by two different modules, and a module registered under two names."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(6, 6)
        self.dec = nn.Linear(6, 6)
        self.dec.weight = self.enc.weight
        self.out = nn.Linear(6, CLASSES)
        self.head = self.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.dec(torch.tanh(self.enc(x.flatten(1)[:, :6])))))


def test_tied_weights_match_captum_and_stay_untouched(data, tmp_path) -> None:
    x, y, xt, yt = data
    torch.manual_seed(0)
    model = _Tied()
    path = tmp_path / "tied.pt"
    torch.save({"state_dict": model.state_dict(), "learning_rate": 0.5}, path)
    checkpoints = [(str(path), 0.5)]
    oracle = _captum(model, checkpoints, x, y)
    _close(TracIn().self_influence(model, checkpoints, x, y), oracle.self_influence())
    _close(TracIn().scores(model, checkpoints, x, y, xt, yt), oracle.influence((xt, yt), k=None))
    _training_like(model)
    before = _snapshot(model)
    params = list(model.parameters())
    TracIn().self_influence(model, checkpoints, x, y)
    TracIn(layers=["head"]).self_influence(model, checkpoints, x, y)
    _assert_same(before, _snapshot(model))
    assert all(a is b for a, b in zip(params, model.parameters())), "a parameter object was replaced"


def test_online_update_equals_offline(trained, data) -> None:
    """Adding checkpoints one by one (the model's current weights) equals the offline sums."""
    model, checkpoints = trained[True]
    x, y, xt, yt = data
    online_self = torch.zeros(N_TRAIN, dtype=torch.float64)
    online_scores = torch.zeros(N_TEST, N_TRAIN)
    replay = copy.deepcopy(model)
    order = torch.randperm(N_TRAIN)  # any reading order: the indices place each row
    batches = [(order[i : i + 7], x[order[i : i + 7]], y[order[i : i + 7]]) for i in range(0, N_TRAIN, 7)]
    for path, lr in checkpoints:
        replay.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        count = TracIn(batch_size=5).update(replay, lr, batches, online_self, xt, yt, online_scores)
        assert count == N_TRAIN
    _close(online_self.float(), TracIn().self_influence(model, checkpoints, x, y))
    _close(online_scores, TracIn().scores(model, checkpoints, x, y, xt, yt))
    with pytest.raises(ValueError, match="positive learning rate"):
        TracIn().update(replay, 0.0, batches, online_self)
