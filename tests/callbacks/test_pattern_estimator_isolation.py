"""PatternEstimator records the training step's own forward passes only: not other monitors'
explanations (any list order), not deep copies of the model; its hooks count against
``max_overhead``; ``every_n_batches`` samples batches."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import IntegratedGradients
from lightning_xai.attribution.base import observe
from lightning_xai.callbacks import (
    MetricsMonitor,
    PatternEstimator,
    SaliencyMonitor,
    SanityCheckMonitor,
    TCAVMonitor,
    TracInMonitor,
)
from lightning_xai.metrics.functional.randomization import model_copy
from lightning_xai.metrics.functional.robustness import softplus_twin
from tests.helpers.data import tiny_concepts
from tests.helpers.lightning_modules import tiny_model
from tests.helpers.training import fit, trainer_kwargs

NUM_TRAIN, BATCH = 64, 16  # tiny_datamodule's defaults: 4 training batches per epoch


def _samples(estimator: PatternEstimator, layer: str = "fc") -> torch.Tensor:
    """Samples recorded per output unit of ``layer`` (a Linear layer: one sample per input row)."""
    sums = estimator.statistics.sums[layer]
    return sums["n_plus"] + sums["n_minus"]


def _prepared(**kwargs: object) -> tuple[PatternEstimator, torch.nn.Module]:
    torch.manual_seed(0)
    model = tiny_model().eval()
    estimator = PatternEstimator(initial_batches=0, **kwargs)
    estimator.prepare(None, model)  # type: ignore[arg-type]  # no initial estimate: no trainer needed
    return estimator, model


def test_deep_copies_and_observed_forwards_never_count() -> None:
    estimator, model = _prepared()
    x = torch.rand(5, 3, 16, 16)
    estimator._active = True  # inside a training step's recording window
    with torch.no_grad():
        for twin in (copy.deepcopy(model), model_copy(model), softplus_twin(model)):
            assert any(m._forward_hooks for m in twin.modules()), "the copy carries the hooks"
            twin(x)
        with observe(model):
            model(x)
        assert estimator.statistics.sums == {}, "a copy's or an observed forward pass was recorded"
        model(x)  # the model's own forward in the window counts
    assert torch.equal(_samples(estimator), torch.full((3,), 5.0, dtype=torch.float64))
    estimator._remove_hooks()


def test_hook_time_counts_against_the_budget() -> None:
    estimator, model = _prepared()
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        estimator._spent = 0.0
        model(x)  # outside the window: no work, no time
        assert estimator._spent == 0.0
        estimator._active = True
        model(x)
    assert estimator._spent > 0.0, "the hooks' time is not counted"
    estimator._remove_hooks()


def _monitors() -> list[pl.Callback]:
    concepts = {k: v.images for k, v in tiny_concepts(6).items()}
    return [
        SaliencyMonitor([IntegratedGradients(n_steps=4)], num_samples=3, every_n_train_steps=1),
        MetricsMonitor(["saliency"], metrics=["deletion_auc"], num_samples=3),
        SanityCheckMonitor(["saliency"], num_samples=3),
        TracInMonitor(num_samples=3),
        TCAVMonitor(concepts=concepts, layers=["features.8"], target_classes=[0], n_random=2, num_samples=4),
    ]


def _fit_with(tmp_path: Path, callbacks: list[pl.Callback]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, callbacks, logger=CSVLogger(str(tmp_path)), max_epochs=1)


def test_other_monitors_never_count_in_either_order(tmp_path: Path) -> None:
    """Alone, listed first and listed last: the same sums over the same 64 training samples."""

    def estimator() -> PatternEstimator:
        return PatternEstimator(reset_each_run=False, initial_batches=0)

    alone = estimator()
    _fit_with(tmp_path / "alone", [alone])
    assert torch.equal(_samples(alone), torch.full((3,), float(NUM_TRAIN), dtype=torch.float64))
    eps = torch.finfo(torch.float32).eps  # per-batch sums are float32, accumulated in float64
    for order in ("first", "last"):
        together = estimator()
        others = _monitors()
        _fit_with(tmp_path / order, [together, *others] if order == "first" else [*others, together])
        assert sorted(together.statistics.sums) == sorted(alone.statistics.sums)
        for name, sums in alone.statistics.sums.items():
            got = together.statistics.sums[name]
            # the sample count per unit is an integer: exact
            torch.testing.assert_close(got["n_plus"] + got["n_minus"], sums["n_plus"] + sums["n_minus"], rtol=0, atol=0)
            for key, value in sums.items():
                # same samples, same order, same (bitwise-identical) training: equal up to rounding
                tol = 8 * eps * float(value.abs().max().clamp(min=1.0))
                torch.testing.assert_close(got[key], value, rtol=0, atol=tol, msg=f"{order}: {name} {key}")


def test_every_n_batches_and_over_budget(tmp_path: Path) -> None:
    sampled = PatternEstimator(reset_each_run=False, initial_batches=0, every_n_batches=2)
    _fit_with(tmp_path / "sampled", [sampled])
    assert torch.equal(_samples(sampled), torch.full((3,), NUM_TRAIN / 2, dtype=torch.float64))  # batches 0 and 2
    # fit-start work alone exceeds a 1e-9 budget: no batch is recorded, every one is counted as skipped
    starved = PatternEstimator(reset_each_run=False, initial_batches=0, max_overhead=1e-9)
    _fit_with(tmp_path / "starved", [starved])
    assert starved.statistics.sums == {} and starved._budget_skipped == NUM_TRAIN // BATCH
    with pytest.raises(ValueError, match="every_n_batches"):
        PatternEstimator(every_n_batches=0)


class TwoForwardsManual(pl.LightningModule):
    """Manual optimisation with two forward passes (and two backward passes) per training step."""

    def __init__(self, optimizer: str = "sgd") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Linear(4, 3)
        self.automatic_optimization = optimizer != "manual"
        self.optimizer = optimizer

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        if self.automatic_optimization:
            return F.cross_entropy(self.net(x), y)
        opt = self.optimizers()
        for half in x.chunk(2):
            opt.zero_grad()
            self.manual_backward(self.net(half).square().mean())
            opt.step()
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer == "lbfgs":
            return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("optimizer", ["manual", "lbfgs"])
def test_manual_optimisation_counts_every_forward_and_a_closure_once(tmp_path: Path, optimizer: str) -> None:
    """Manual: both halves of the batch count (16 rows); LBFGS re-evaluates its closure, yet each
    batch counts once (16 rows per batch, not 16 per evaluation)."""
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(32, 4, generator=gen), torch.randint(0, 3, (32,), generator=gen))
    estimator = PatternEstimator(reset_each_run=False, initial_batches=0)
    kwargs = trainer_kwargs(tmp_path, max_epochs=1, logger=CSVLogger(str(tmp_path)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl.Trainer(callbacks=[estimator], **kwargs).fit(TwoForwardsManual(optimizer), DataLoader(data, batch_size=16))
    assert torch.equal(_samples(estimator, "net"), torch.full((3,), 32.0, dtype=torch.float64))
