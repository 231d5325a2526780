"""Low precision, autocast, out-of-memory handling and host synchronisations (issue 6)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

from lightning_xai.attribution import (
    GradCAM,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
    ScoreCAM,
)
from lightning_xai.attribution.base import DEFAULT_CHUNK_ELEMENTS, default_chunk_rows, run_chunked
from lightning_xai.attribution.path import quadrature
from lightning_xai.errors import LightningXAIError
from tests.helpers.models import make

pytestmark = pytest.mark.numerics


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), dim=0))


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5)).eval()


# --------------------------------------------------------------------------------------------
# bf16 / fp16 models
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda: Saliency(abs=False),
        lambda: IntegratedGradients(n_steps=8),
        lambda: NoiseTunnel(Saliency(abs=False), n_samples=4),
        lambda: GradCAM(),
        lambda: ScoreCAM(),
    ],
    ids=["saliency", "ig", "smoothgrad", "grad_cam", "score_cam"],
)
def test_bf16_model_gets_bf16_inputs_and_returns_float32_maps(build) -> None:
    model, x = make("small")
    explainer = build()
    reference = explainer(model, x, 2)
    low = copy.deepcopy(model).to(torch.bfloat16)
    seen: list[torch.dtype] = []
    handle = low.features[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    try:
        out = explainer(low, x, 2)  # float32 inputs, bf16 model: no dtype error
    finally:
        handle.remove()
    assert set(seen) == {torch.bfloat16}
    assert out.dtype == torch.float32 and out.shape == reference.shape
    assert _cosine(out, reference) > 0.97


def test_integrated_gradients_accumulates_in_float32_for_a_bf16_model() -> None:
    """Completeness of IG on a bf16 model stays near the fp32 model's; a bf16 path sum does not."""
    model = _mlp()
    x = torch.rand(4, 32) * 4
    target = torch.tensor([0, 1, 2, 3])
    n_steps = 256
    ig = IntegratedGradients(n_steps=n_steps, method="riemann_middle")
    attr32, delta32 = ig.with_delta(model, x, target)
    low = copy.deepcopy(model).to(torch.bfloat16)
    attr16, delta16 = ig.with_delta(low, x, target)
    assert attr16.dtype == torch.float32 and delta16.dtype == torch.float32
    # the same integral, computed the old way: the sum in the model's dtype (bf16)
    steps, alphas = (torch.as_tensor(v, dtype=torch.bfloat16) for v in quadrature("riemann_middle", n_steps))
    xb = x.to(torch.bfloat16)
    total = torch.zeros_like(xb)
    for step, alpha in zip(steps, alphas):
        points = (alpha * xb).requires_grad_(True)
        (grad,) = torch.autograd.grad(low(points).gather(1, target[:, None]).sum(), points)
        total += grad * step
    naive = (total * xb).float()
    err_ours = (attr16 - attr32).norm() / attr32.norm()
    err_naive = (naive - attr32).norm() / attr32.norm()
    assert err_ours < 0.05
    assert err_ours < err_naive / 2, (float(err_ours), float(err_naive))
    gap = (low(xb).float() - low(torch.zeros_like(xb)).float()).gather(1, target[:, None]).squeeze(1)
    assert (delta16.abs() <= 0.02 * gap.abs() + 0.02).all(), (delta16, gap)


@pytest.mark.parametrize("build", [lambda: Saliency(abs=False), lambda: GradCAM()], ids=["saliency", "grad_cam"])
def test_outer_autocast_is_off_for_a_float32_model(build) -> None:
    model, x = make("small")
    explainer = build()
    reference = explainer(model, x, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16  # the autocast is real: outside an explainer it applies
        out = explainer(model, x, 2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference, rtol=0, atol=0)


def test_outer_autocast_with_a_bf16_model() -> None:
    model, x = make("small")
    low = copy.deepcopy(model).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = Saliency()(low, x, 1)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert _cosine(out, Saliency()(model, x, 1)) > 0.97


# --------------------------------------------------------------------------------------------
# memory: chunk defaults
# --------------------------------------------------------------------------------------------
def test_default_chunks_are_bounded_in_input_elements() -> None:
    x = torch.zeros(8, 3, 224, 224)
    assert DEFAULT_CHUNK_ELEMENTS == 2**22
    assert default_chunk_rows(x) == 27
    assert IntegratedGradients()._chunk_rows(x) == 27
    assert default_chunk_rows(torch.zeros(1, 3, 4096, 4096)) == 1


class CountRows(nn.Module):
    """Wraps a model and records the batch size of every forward call."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        self.rows.append(x.shape[0])
        return self.inner(x)


def test_noise_tunnel_chunks_its_noisy_copies_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = make("small")  # 4 x 1 x 28 x 28
    monkeypatch.setattr("lightning_xai.attribution.base.DEFAULT_CHUNK_ELEMENTS", 3 * 28 * 28)
    monkeypatch.setattr("lightning_xai.attribution.gradient.default_chunk_rows", lambda inputs: 3)
    counted = CountRows(model)
    tunnel = NoiseTunnel(Saliency(), n_samples=5)
    out = tunnel(counted, x, 1)
    assert max(counted.rows) == 3 and sum(counted.rows) == 5 * 4
    torch.testing.assert_close(out, NoiseTunnel(Saliency(), n_samples=5, internal_batch_size=100)(model, x, 1))


# --------------------------------------------------------------------------------------------
# out of memory
# --------------------------------------------------------------------------------------------
class FakeOOM(nn.Module):
    """Raises ``torch.OutOfMemoryError`` for a forward pass of more than ``limit`` rows."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.rows: list[int] = []

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {x.shape[0]} rows")
        self.rows.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize(
    "build",
    [
        lambda size: IntegratedGradients(n_steps=5, internal_batch_size=size),
        lambda size: NoiseTunnel(Saliency(), n_samples=5, internal_batch_size=size),
        lambda size: ScoreCAM(internal_batch_size=size),
    ],
    ids=["ig", "smoothgrad", "score_cam"],
)
def test_default_chunk_halves_on_out_of_memory(build) -> None:
    model, x = make("small")
    x = x[:2]
    reference = build(10_000)(model, x, 1)
    oom = FakeOOM(model, limit=4)
    with pytest.warns(RuntimeWarning, match=r"out of memory at \d+ rows per chunk; retrying at \d+"):
        out = build(None)(oom, x, 1)  # the 2-row clean forward passes; the default chunks are halved
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-7)
    assert max(oom.rows) <= 4


@pytest.mark.parametrize(
    ("explainer", "knob"),
    [
        (IntegratedGradients(n_steps=5, internal_batch_size=8), "lower `internal_batch_size` of IntegratedGradients"),
        (NoiseTunnel(Saliency(), n_samples=5, internal_batch_size=8), "`internal_batch_size` of NoiseTunnel"),
        (ScoreCAM(internal_batch_size=8), "`internal_batch_size` of ScoreCAM"),
        (Saliency(), "explain fewer inputs"),
        (GradCAM(), "explain fewer inputs"),
    ],
    ids=["ig", "smoothgrad", "score_cam", "saliency", "grad_cam"],
)
def test_out_of_memory_is_raised_as_such_naming_the_knob(explainer, knob: str) -> None:
    model, x = make("small")
    oom = FakeOOM(model, limit=3 if isinstance(explainer, ScoreCAM) else 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chosen chunk is not retried
        with pytest.raises(torch.OutOfMemoryError, match=knob) as info:
            explainer(oom, x, 1)
    assert not isinstance(info.value, LightningXAIError)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)


def test_out_of_memory_at_one_row_is_raised() -> None:
    model, x = make("small")
    with pytest.raises(torch.OutOfMemoryError, match="internal_batch_size"):
        with pytest.warns(RuntimeWarning):
            IntegratedGradients(n_steps=3)(FakeOOM(model, limit=0), x, 1)


def test_run_chunked_retries_only_the_failed_slice() -> None:
    seen: list[tuple[int, int]] = []

    def body(rows: slice) -> None:
        if rows.stop - rows.start > 2:
            raise torch.OutOfMemoryError("fake")
        seen.append((rows.start, rows.stop))

    with pytest.warns(RuntimeWarning, match="retrying at 2"):
        run_chunked(7, 4, body, method="test", adaptive=True)
    assert seen == [(0, 2), (2, 4), (4, 6), (6, 7)]


# --------------------------------------------------------------------------------------------
# host synchronisations
# --------------------------------------------------------------------------------------------
class SyncCounter:
    """Counts the Tensor -> Python conversions (each a device-to-host sync on a GPU)."""

    NAMES = ("__bool__", "item", "__int__", "__float__", "__index__", "tolist")

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def counting(tensor: Tensor, *args: object, _original=original) -> object:
                self.count += 1
                return _original(tensor, *args)

            monkeypatch.setattr(torch.Tensor, name, counting)


@pytest.mark.parametrize(
    "build",
    [
        lambda size: IntegratedGradients(n_steps=6, internal_batch_size=size),
        lambda size: IntegratedGradients(n_steps=6, baseline=["zero", "uniform"], internal_batch_size=size),
        lambda size: NoiseTunnel(Saliency(), n_samples=6, internal_batch_size=size),
        lambda size: NoiseTunnel(IntegratedGradients(n_steps=3, internal_batch_size=size), internal_batch_size=size),
        lambda size: ScoreCAM(internal_batch_size=size),
    ],
    ids=["ig", "ig_two_baselines", "smoothgrad", "smoothgrad_of_ig", "score_cam"],
)
@pytest.mark.parametrize("target", [torch.tensor([1, 2, 3, 4]), None], ids=["explicit", "predicted"])
def test_targets_are_checked_once_per_call(build, target: Tensor | None, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = make("small")
    counts = {}
    for size in (1, 10_000):
        explainer = build(size)
        counter = SyncCounter(monkeypatch)
        if isinstance(explainer, IntegratedGradients):
            explainer.with_delta(model, x, target)  # a clean forward pass and a target check before the chunks
        else:
            explainer(model, x, target)
        counts[size] = counter.count
        monkeypatch.undo()
    # the same number of syncs for 1 chunk and for dozens: nothing per chunk; at most the one range check
    assert counts[1] == counts[10_000] <= (1 if target is not None else 0), counts


def test_out_of_range_target_error_shows_the_offending_values_only() -> None:
    model, x = make("small")
    x = x.repeat(2, 1, 1, 1)  # 8 inputs
    target = torch.tensor([0, 1, 12, 3, 4, 15, 6, 7])
    with pytest.raises(ValueError, match=r"\[0, 10\), but got 2 distinct out-of-range values: \[12, 15\]\.$"):
        IntegratedGradients(n_steps=4)(model, x, target)
    with pytest.raises(ValueError, match=r"got 8 distinct out-of-range values: \[20, 21, 22, 23, 24, \.\.\.\]\.$"):
        IntegratedGradients(n_steps=4)(model, x, torch.arange(20, 28))
