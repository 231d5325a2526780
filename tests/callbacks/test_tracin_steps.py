"""TracInStepsMonitor: the accumulated sums equal an explicit torch.func replay of the training
steps; training is bitwise identical with and without it; two DDP processes equal one."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.utils.data import DataLoader, IterableDataset, Sampler, TensorDataset

from lightning_xai.callbacks.tracin_steps import TracInStepsMonitor
from tests.helpers.training import fit, trainer_kwargs

N, BATCH, LR = 36, 8, 0.2


def _data() -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(N, 6, generator=gen)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())


class MLP(pl.LightningModule):
    """Plain SGD with a per-step learning-rate schedule, shuffled data."""

    def __init__(self, batch_size: int = BATCH, sampler: Any = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        self.batch_size, self.sampler = batch_size, sampler

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9**t)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def train_dataloader(self) -> DataLoader:
        if self.sampler is not None:
            return DataLoader(_data(), batch_sampler=self.sampler)
        return DataLoader(_data(), batch_size=self.batch_size, shuffle=True, generator=torch.Generator().manual_seed(3))


def _replay(epochs: int, probe: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The explicit sums: the same SGD run by hand, with torch.func per-example gradients."""
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.9**t)
    data = _data()
    # the DataLoader draws its base seed from the same generator before the sampler's: iterate one
    indices = DataLoader(
        TensorDataset(torch.arange(N)), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    self_inf, scores = torch.zeros(N, dtype=torch.float64), torch.zeros(len(probe[0]), N, dtype=torch.float64)

    def one(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    per_example = vmap(grad(one), in_dims=(None, 0, 0))
    for _ in range(epochs):
        for (idx,) in indices:
            x, y = data.tensors[0][idx], data.tensors[1][idx]
            params = {k: v.detach() for k, v in model.named_parameters()}
            g = torch.cat([t.flatten(1) for t in per_example(params, x, y).values()], 1).double()
            gp = torch.cat([t.flatten(1) for t in per_example(params, *probe).values()], 1).double()
            lr = opt.param_groups[0]["lr"]
            self_inf[idx] += lr * (g * g).sum(1)
            scores[:, idx] += lr * (gp @ g.T)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
    return self_inf, scores


def _fit(tmp_path: Path, monitor: Any, model: pl.LightningModule, **kw: Any) -> pl.Trainer:
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=2, logger=CSVLogger(str(tmp_path)), limit_val_batches=0, **kw),
        callbacks=[monitor] if monitor is not None else [],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model)
    return trainer


def test_equals_explicit_per_example_sum_over_the_steps(tmp_path: Path) -> None:
    probe = (torch.randn(3, 6, generator=torch.Generator().manual_seed(5)), torch.tensor([0, 1, 2]))
    monitor = TracInStepsMonitor(gradient_layers=None, probe_every_n_train_steps=1, probe=probe, num_samples=3)
    _fit(tmp_path, monitor, MLP())
    self_inf, scores = _replay(2, probe)
    assert monitor.steps == 2 * 5
    torch.testing.assert_close(monitor.self_influence, self_inf, rtol=1e-5, atol=0)
    torch.testing.assert_close(monitor.probe_scores, scores, rtol=1e-5, atol=1e-5 * float(scores.abs().max()))
    # a wrong index order would be caught: the sums are not a permutation-invariant blur
    assert not torch.allclose(monitor.self_influence, self_inf.roll(1), rtol=1e-2)
    assert not any(m._forward_hooks for m in monitor._counted.values())  # hooks removed at train end


def test_training_is_bitwise_identical_with_and_without(tmp_path: Path) -> None:
    """Demo CNN (conv, BN, in-place ReLU, dropout, Adam), shuffled data, probe steps every 2 steps."""
    with pytest.warns(UserWarning, match="not plain SGD"):
        monitor = TracInStepsMonitor(
            gradient_layers=None, probe_every_n_train_steps=2, num_samples=2, num_top_examples=4
        )
        with_monitor = fit(tmp_path / "a", [monitor], logger=CSVLogger(str(tmp_path / "a")))
    without = fit(tmp_path / "b", [], logger=CSVLogger(str(tmp_path / "b")))
    for (name, a), (_, b) in zip(with_monitor.state_dict().items(), without.state_dict().items()):
        assert torch.equal(a, b), name
    assert monitor.self_influence is not None and bool((monitor.self_influence > 0).all())
    assert monitor.probe_scores is not None and bool((monitor.probe_scores != 0).any())


class _Stream(IterableDataset):
    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        data = _data()
        return iter(zip(data.tensors[0], data.tensors[1]))


class _StreamMLP(MLP):
    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Stream(), batch_size=BATCH)


def test_iterable_dataset_error_says_what_to_change(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"map-style dataset.*DataLoader\(dataset, batch_size"):
        _fit(tmp_path, TracInStepsMonitor(), _StreamMLP())


class _Unsupported(MLP):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def test_uncountable_layer_raises_at_setup_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'net.1' \(LayerNorm\)"):
        _fit(tmp_path, TracInStepsMonitor(gradient_layers=None), _Unsupported())


# -- DDP ---------------------------------------------------------------------------------------
class _Epoch:
    epoch = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on `batch_sampler.sampler`
        self.epoch = epoch


class InterleavedBatches(Sampler):
    """One process replaying two DistributedSampler ranks (shuffle, seed 0): step k's batch is rank
    0's k-th batch followed by rank 1's, so the global batches equal a 2-process run's."""

    def __init__(self, n: int, per_rank: int) -> None:
        self.n, self.per_rank, self.sampler = n, per_rank, _Epoch()

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.sampler.epoch)  # DistributedSampler's seed 0 + epoch
        order = torch.randperm(self.n, generator=g).tolist()
        ranks = [order[r::2] for r in range(2)]
        for k in range(0, len(ranks[0]), self.per_rank):
            yield ranks[0][k : k + self.per_rank] + ranks[1][k : k + self.per_rank]

    def __len__(self) -> int:
        return -(-self.n // 2 // self.per_rank)


class SavingMonitor(TracInStepsMonitor):
    """Writes the totals on rank zero when training ends (callback state lives in the children)."""

    def __init__(self, out: str) -> None:
        super().__init__()
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if trainer.is_global_zero:
            torch.save({"self_influence": self.self_influence, "weights": pl_module.state_dict()}, self.out)


class DDPMLP(MLP):
    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=LR)


def test_two_ddp_processes_equal_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")  # the DistributedSampler's seed, which InterleavedBatches replays
    one, two = tmp_path / "one.pt", tmp_path / "two.pt"
    _fit(tmp_path / "1", SavingMonitor(str(one)), DDPMLP(sampler=InterleavedBatches(N, 4)))
    _fit(tmp_path / "2", SavingMonitor(str(two)), DDPMLP(batch_size=4), strategy="ddp_spawn", devices=2)
    a, b = torch.load(one), torch.load(two)
    for name, w in a["weights"].items():  # the same training run (up to the order of the gradient sum)
        torch.testing.assert_close(b["weights"][name], w, rtol=1e-5, atol=1e-6)
    assert bool((a["self_influence"] > 0).all())
    torch.testing.assert_close(b["self_influence"], a["self_influence"], rtol=1e-4, atol=0)


def test_mode_steps_of_tracin_monitor_is_this_monitor_and_defaults_to_the_head() -> None:
    from lightning_xai.callbacks import TracInMonitor

    monitor = TracInMonitor(mode="steps", num_top_examples=4)
    assert isinstance(monitor, TracInStepsMonitor) and monitor.gradient_layers == "last_linear"
    with pytest.raises(TypeError, match="projection_dim"):
        TracInMonitor(mode="steps", projection_dim=8)
    with pytest.raises(ValueError, match="'checkpoints' or 'steps'"):
        TracInMonitor(mode="epochs")


class _SpentAtTrainStart(pl.Callback):
    """Listed after the monitor: its budget spent by the time training starts (the fit-start work)."""

    def __init__(self, monitor: TracInStepsMonitor) -> None:
        self.monitor = monitor

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_start = self.monitor._spent


def test_the_backward_hooks_count_against_the_budget(tmp_path: Path) -> None:
    # no run is due (every_n_epochs > max_epochs) and no probes: what the budget gains after the
    # start is the hooks' and the accumulation's time, which must count (max_overhead sees it)
    monitor = TracInStepsMonitor(gradient_layers=None, every_n_epochs=100)
    spy = _SpentAtTrainStart(monitor)
    trainer = pl.Trainer(
        **trainer_kwargs(tmp_path, max_epochs=1, logger=CSVLogger(str(tmp_path)), limit_val_batches=0),
        callbacks=[monitor, spy],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(DDPMLP(batch_size=4))
    assert monitor.steps > 0 and monitor._spent > spy.at_start
    assert monitor._ghost is None or monitor._ghost.seconds == 0.0  # every hook second was handed over
