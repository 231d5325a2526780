"""Streaming the training data as the model sees it (MonitorBase.iter_dataset): the sampler's
indices, DDP shares, an un-augmented view, per-pass randomness, reader settings, progress, SIGTERM;
and what TracInMonitor and PrototypePush make of it."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, DistributedSampler, IterableDataset, SubsetRandomSampler, TensorDataset

from lightning_xai.callbacks import MonitorBase, PrototypePush, TracInMonitor
from lightning_xai.callbacks.base import _own_share, _reader_kwargs, _sampler_indices
from tests.helpers.data import LabelledImages
from tests.helpers.lightning_modules import FlatMLP, ProtoShapes
from tests.helpers.training import trainer_kwargs


class _Recorder(MonitorBase):
    """Records what one pass of iter_dataset yields (indices and inputs)."""

    def __init__(self, dataset=None, batch_size: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.dataset, self.batch_size = dataset, batch_size
        self.indices: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []

    def run(self, trainer, pl_module) -> None:
        self.indices, self.inputs = [], []
        for indices, batch in self.iter_dataset(trainer, pl_module, self.dataset, batch_size=self.batch_size):
            self.indices.append(indices)
            self.inputs.append(batch[0].cpu())


class _Noisy(TensorDataset):
    """A random augmentation: every read adds fresh noise drawn from the global RNG."""

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        return x + torch.randn_like(x), y


class _Stream(IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(8):
            yield torch.rand(3, 4, 4, generator=g), torch.tensor(i % 3)


class _ImageMLP(FlatMLP):
    """An MLP on tiny [3, 4, 4] images (TracIn's pictures need images)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def _fit(tmp_path: Path, callbacks: list, loader: DataLoader, model=None, **overrides) -> pl.LightningModule:
    pl.seed_everything(0, verbose=False)
    model = model or _ImageMLP()
    kwargs = trainer_kwargs(tmp_path, max_epochs=1, logger=CSVLogger(str(tmp_path)))
    kwargs.update(overrides)
    pl.Trainer(callbacks=callbacks, **kwargs).fit(model, loader)
    return model


def _data(n: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.rand(n, 3, 4, 4, generator=g), torch.arange(n) % 3)


# -- which examples ------------------------------------------------------------------------------------
def test_the_samplers_indices_are_streamed_and_nan_elsewhere_in_tracin(tmp_path: Path) -> None:
    data = _data(8)
    loader = DataLoader(data, batch_size=2, sampler=SubsetRandomSampler([0, 1, 2, 3]))
    recorder = _Recorder()
    tracin = TracInMonitor(num_samples=2, num_top_examples=3, probe=(data.tensors[0], data.tensors[1]), batch_size=3)
    _fit(tmp_path, [recorder, tracin], loader)
    assert torch.cat(recorder.indices).tolist() == [0, 1, 2, 3]  # not 0..7
    assert torch.isfinite(tracin.self_influence[:4]).all() and (tracin.self_influence[:4] > 0).all()
    assert torch.isnan(tracin.self_influence[4:]).all()
    assert torch.isnan(tracin.probe_scores[:, 4:]).all() and torch.isfinite(tracin.probe_scores[:, :4]).all()


def test_an_iterable_training_set_asks_for_a_dataset_view(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dataset="):
        _fit(tmp_path, [_Recorder()], DataLoader(_Stream(), batch_size=4))
    view = _data(8)
    recorder = _Recorder(dataset=view)
    _fit(tmp_path / "view", [recorder], DataLoader(_Stream(), batch_size=4))
    assert torch.cat(recorder.indices).tolist() == list(range(8))


def test_a_view_of_another_length_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="holds 5 examples and the training dataset 8"):
        _fit(tmp_path, [_Recorder(dataset=_data(5))], DataLoader(_data(8), batch_size=4))


def test_reading_the_sampler_leaves_its_generator_alone() -> None:
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(_data(8), batch_size=2, sampler=SubsetRandomSampler([1, 4, 6], generator=generator))
    state = generator.get_state()
    assert _sampler_indices(loader).tolist() == [1, 4, 6]
    assert torch.equal(generator.get_state(), state)


def test_ddp_shares_cover_the_dataset_once() -> None:
    """A DistributedSampler over 10 examples and 3 ranks pads to 12 (two indices on two ranks):
    each rank streams its share, a padded index only on the lowest rank holding it."""
    data = _data(10)
    world = 3
    shares = []
    for rank in range(world):
        sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=3)
        sampler.set_epoch(2)
        indices = _sampler_indices(DataLoader(data, batch_size=4, sampler=sampler))
        assert indices.tolist() == sorted(set(sampler))  # this rank's share, as the sampler yields it
        shares.append(indices)
    assert sum(len(s) for s in shares) == 12  # the padding is there before the de-duplication

    def fake_trainer(rank: int) -> SimpleNamespace:
        def all_gather(t: torch.Tensor) -> torch.Tensor:
            if t.numel() == 1:  # the counts
                return torch.tensor([[len(s)] for s in shares])
            return torch.stack([torch.cat([s, torch.full((t.numel() - len(s),), -1)]) for s in shares])

        return SimpleNamespace(
            global_rank=rank, strategy=SimpleNamespace(root_device=torch.device("cpu"), all_gather=all_gather)
        )

    own = [_own_share(fake_trainer(r), shares[r]) for r in range(world)]
    assert sorted(torch.cat(own).tolist()) == list(range(10))  # every example exactly once
    assert own[0].tolist() == shares[0].tolist()


# -- which view, and its randomness ---------------------------------------------------------------------
def test_the_view_is_read_at_the_samplers_indices(tmp_path: Path) -> None:
    clean = _data(8)
    augmented = _Noisy(*clean.tensors)
    recorder = _Recorder(dataset=clean)
    _fit(tmp_path, [recorder], DataLoader(augmented, batch_size=2, sampler=SubsetRandomSampler([1, 3, 5])))
    assert torch.cat(recorder.indices).tolist() == [1, 3, 5]
    assert torch.equal(torch.cat(recorder.inputs), clean.tensors[0][[1, 3, 5]])  # un-augmented


def test_reads_draw_new_randomness_every_batch_and_leave_trainings_alone(tmp_path: Path) -> None:
    """Identical examples, augmented by noise: every batch of one pass gets other noise (a per-batch
    fork would give each batch the same draws), while the global RNG after the pass is as before."""
    same = _Noisy(torch.zeros(8, 3, 4, 4), torch.arange(8) % 3)

    class Check(_Recorder):
        def run(self, trainer, pl_module) -> None:
            before = torch.get_rng_state()
            super().run(trainer, pl_module)
            self.rng_kept = torch.equal(before, torch.get_rng_state())

    recorder = Check(batch_size=2)
    _fit(tmp_path, [recorder], DataLoader(same, batch_size=4))
    batches = recorder.inputs
    assert len(batches) == 4 and recorder.rng_kept
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.equal(batches[a], batches[b])


def test_the_reader_uses_the_loaders_workers_on_an_accelerator_only() -> None:
    def init(worker_id: int) -> None:
        pass

    loader = DataLoader(_data(8), batch_size=4, num_workers=3, pin_memory=True, worker_init_fn=init, prefetch_factor=4)
    assert _reader_kwargs(loader, "cpu") == {"num_workers": 0}
    on_gpu = _reader_kwargs(loader, "cuda")
    assert on_gpu["num_workers"] == 3 and on_gpu["pin_memory"] is True and on_gpu["worker_init_fn"] is init
    assert on_gpu["persistent_workers"] is False and on_gpu["prefetch_factor"] == 4
    assert "generator" not in on_gpu  # drawing the base seed from it would change training's shuffling
    DataLoader(_data(8), batch_size=4, **on_gpu)  # valid DataLoader arguments
    assert _reader_kwargs(DataLoader(_data(8), pin_memory=True), "cuda") == {"num_workers": 0, "pin_memory": True}


# -- progress and SIGTERM -------------------------------------------------------------------------------
def test_a_long_pass_logs_progress_with_an_eta(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recorder = _Recorder(batch_size=2)
    recorder.progress_interval_s = 0.0
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, [recorder], DataLoader(_data(8), batch_size=4))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("_Recorder: read")]
    assert any("2/8 training examples" in line and "ETA" in line for line in lines), lines
    assert any("read 8 training examples in" in line for line in lines), lines


def test_sigterm_stops_the_pass_between_batches(tmp_path: Path) -> None:
    class Terminated(_Recorder):
        def run(self, trainer, pl_module) -> None:
            self.batches_read = 0
            for _ in self.iter_dataset(trainer, pl_module, batch_size=2):
                self.batches_read += 1
                trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets
            self.finished = True

    monitor = Terminated()
    with pytest.raises(SIGTERMException):
        _fit(tmp_path, [monitor], DataLoader(_data(8), batch_size=4))
    assert monitor.batches_read == 1 and not hasattr(monitor, "finished")


# -- TracIn and the push on top of it -------------------------------------------------------------------
class _SkipsNaN(_ImageMLP):
    """Trains on the finite rows only, so one NaN training image leaves the weights finite."""

    def training_step(self, batch, batch_idx):
        x, y = batch
        ok = torch.isfinite(x.flatten(1)).all(dim=1)
        return torch.nn.functional.cross_entropy(self(x[ok]), y[ok])


class _TopRecorder(TracInMonitor):
    def render(self, sinks, info, probe, results) -> None:
        if not self.dry_running:
            self.published = {k: v.clone() for k, v in results.items()}
        super().render(sinks, info, probe, results)


def test_a_nan_training_example_is_left_out_of_the_rankings_with_a_warning(tmp_path: Path) -> None:
    x, y = _data(8).tensors
    x = x.clone()
    x[5] = float("nan")
    monitor = _TopRecorder(num_samples=2, num_top_examples=8, probe=(x[:4], y[:4]), synchronous_logging=True)
    with pytest.warns(UserWarning, match=r"dataset index \[5\].*left out of the rankings"):
        _fit(tmp_path, [monitor], DataLoader(TensorDataset(x, y), batch_size=4), model=_SkipsNaN())
    assert torch.isnan(monitor.self_influence[5])  # kept as computed
    top = monitor.published["top_indices"].tolist()
    assert sorted(top) == [0, 1, 2, 3, 4, 6, 7]  # every finite example, not the NaN one (topk ranks NaN first)
    assert 5 not in monitor.published["pro_indices"].flatten().tolist()
    assert 5 not in monitor.published["opp_indices"].flatten().tolist()
    assert torch.isfinite(monitor.published["self_influence"]).all()


class _Flipped(LabelledImages):
    """A random augmentation: a horizontal flip and noise on every read."""

    def __getitem__(self, i: int):
        image, label = super().__getitem__(i)
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image + 0.3 * torch.rand_like(image), label


class _AfterFirstEpoch(pl.Callback):
    """Listed after the push: the weights at the end of epoch 0 (right after the push)."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            self.state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def test_the_gallery_shows_the_exact_view_each_prototype_was_pushed_from(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    data = _Flipped(torch.rand(24, 3, 16, 16, generator=g), torch.arange(24) % 3)
    push = PrototypePush(every_n_epochs=1, synchronous_logging=True)
    snapshot = _AfterFirstEpoch()  # a push never runs on the final epoch: compare with the weights it pushed into
    model = _fit(
        tmp_path,
        [push, snapshot],
        DataLoader(data, batch_size=8),
        model=ProtoShapes(3),
        logger=TensorBoardLogger(str(tmp_path)),
        max_epochs=2,
    )
    model.load_state_dict(snapshot.state)
    head = model.head
    assert push.source_indices.tolist() == head.prototype_source.tolist()
    ph, pw = head.prototype_shape

    def patches(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = head.embed(model.features(images))
        return torch.stack(
            [z[j, :, r : r + ph, c : c + pw] for j, (r, c) in enumerate(head.prototype_position.tolist())]
        )

    model.eval()
    torch.testing.assert_close(patches(push.source_images), head.prototypes.detach(), rtol=1e-5, atol=1e-6)
    reread = torch.stack([data[int(i)][0] for i in head.prototype_source])  # another random view
    assert not torch.allclose(patches(reread), head.prototypes.detach(), rtol=1e-3, atol=1e-3)
