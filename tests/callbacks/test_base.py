"""The monitor base: background writer, schedule budget, dataset streaming, dry run, steps, precision."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import GradCAM, Saliency
from lightning_xai.callbacks import MonitorBase, SaliencyMonitor
from lightning_xai.sinks.writer import BackgroundWriter, RenderError
from tests.helpers.data import tiny_datamodule
from tests.helpers.lightning_modules import FlatMLP, TupleOutputClassifier, tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit, trainer_kwargs


# -- background writer ---------------------------------------------------------------------------
def test_writer_runs_jobs_in_order_off_the_calling_thread() -> None:
    writer = BackgroundWriter(max_pending=2)
    seen: list[tuple[int, str]] = []
    for k in range(6):
        writer.submit(lambda k=k: (time.sleep(0.01), seen.append((k, threading.current_thread().name))))
    writer.flush()
    assert [k for k, _ in seen] == list(range(6))
    assert all(name != threading.current_thread().name for _, name in seen)
    writer.close()


def test_writer_reports_a_failure_on_the_next_call_and_only_once() -> None:
    writer = BackgroundWriter()
    writer.submit(lambda: 1 / 0, name="broken job")
    with pytest.raises(RenderError, match="broken job.*ZeroDivisionError") as info:
        writer.flush()
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    writer.flush()  # reported once
    done = []
    writer.submit(lambda: done.append(1))
    writer.close()
    assert done == [1]


def test_writer_pickles_without_its_thread() -> None:
    import pickle

    writer = BackgroundWriter(max_pending=3)
    writer.submit(lambda: None)
    clone = pickle.loads(pickle.dumps(writer))
    assert clone.max_pending == 3 and clone._thread is None
    writer.close()


# -- a small monitor that records what the base hands it --------------------------------------------
class _StreamingMonitor(MonitorBase):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: list[torch.Tensor] = []
        self.rng_equal: list[bool] = []
        self.steps: list[int] = []

    def run(self, trainer, pl_module) -> None:
        before = torch.get_rng_state()
        indices = [idx for idx, _ in self.iter_dataset(trainer, pl_module, batch_size=10)]
        self.rng_equal.append(torch.equal(before, torch.get_rng_state()))
        self.seen.append(torch.cat(indices))
        self.steps.append(self.run_info(trainer).step)
        self._publish_scalars(trainer, {"xai/streaming/ran": 1.0})


class _NoisyDataset(TensorDataset):
    """Draws from the global RNG in __getitem__, like a random augmentation."""

    def __getitem__(self, index):
        x, y = super().__getitem__(index)
        return x + 0.01 * torch.randn_like(x), y


def test_iter_dataset_streams_every_sample_once_without_touching_training_rng(tmp_path: Path) -> None:
    pl.seed_everything(0)
    data = _NoisyDataset(torch.rand(37, 48), torch.randint(0, 3, (37,)))
    monitor = _StreamingMonitor()
    logger = CSVLogger(str(tmp_path))
    trainer = pl.Trainer(callbacks=[monitor], logger=logger, **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(FlatMLP(), DataLoader(data, batch_size=8, shuffle=True))
    assert len(monitor.seen) == 2
    for seen in monitor.seen:
        assert seen.tolist() == list(range(37))
    assert monitor.rng_equal == [True, True]
    # the run's step is the step Lightning logs its own metrics at
    assert monitor.steps == [4, 9]


def test_observe_never_perturb_with_dataset_streaming(tmp_path: Path) -> None:
    def weights(callbacks):
        pl.seed_everything(0)
        data = _NoisyDataset(torch.rand(37, 48), torch.randint(0, 3, (37,)))
        model = FlatMLP()
        trainer = pl.Trainer(callbacks=callbacks, logger=CSVLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
        trainer.fit(model, DataLoader(data, batch_size=8, shuffle=True))
        return {k: v.clone() for k, v in model.state_dict().items()}

    plain, watched = weights([]), weights([_StreamingMonitor()])
    assert all(torch.equal(plain[k], watched[k]) for k in plain)


def test_max_overhead_skips_runs_and_logs_it(tmp_path: Path) -> None:
    class Slow(_StreamingMonitor):
        def run(self, trainer, pl_module) -> None:
            time.sleep(0.3)
            super().run(trainer, pl_module)

    pl.seed_everything(0)
    data = TensorDataset(torch.rand(16, 48), torch.randint(0, 3, (16,)))
    monitor = Slow(max_overhead=0.05)
    logger = CSVLogger(str(tmp_path))
    trainer = pl.Trainer(callbacks=[monitor], logger=logger, **trainer_kwargs(tmp_path, max_epochs=4))
    with pytest.warns(UserWarning, match="max_overhead"):
        trainer.fit(FlatMLP(), DataLoader(data, batch_size=8))
    assert len(monitor.seen) == 1  # the first run fits the budget, later ones would not
    assert monitor.state_dict()["skipped_runs"] == 3
    metrics = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "xai/slow/skipped_runs" in metrics


def test_bad_max_overhead_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_overhead"):
        SaliencyMonitor([Saliency()], max_overhead=0.0)


# -- the dry run exercises the whole path -------------------------------------------------------------
def test_flat_inputs_render_as_strips(tmp_path: Path) -> None:
    pl.seed_everything(0)
    x, y = torch.rand(24, 48), torch.arange(24) % 3
    monitor = SaliencyMonitor([Saliency()], num_samples=3, probe=(x, y))
    logger = TensorBoardLogger(str(tmp_path))
    trainer = pl.Trainer(callbacks=[monitor], logger=logger, **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(FlatMLP(), DataLoader(TensorDataset(x, y), batch_size=8))
    logger.finalize("success")
    acc = read_tensorboard(logger.log_dir)[0]
    assert "xai/saliency/saliency/overlays" in acc.Tags()["images"]
    assert "xai/saliency/saliency/entropy" in acc.Tags()["scalars"]


def test_a_render_failure_surfaces_at_fit_start(tmp_path: Path) -> None:
    class BrokenRender(SaliencyMonitor):
        def render(self, sinks, info, probe, results) -> None:
            for sink in sinks:
                sink.log_image("xai/bad", torch.rand(5, 4, 4), info.step)  # not an image

    pl.seed_everything(0)
    monitor = BrokenRender([GradCAM()], num_samples=2)
    trainer = pl.Trainer(callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        trainer.fit(model, datamodule=tiny_datamodule())
    assert trainer.global_step == 0  # before the first training step


def test_tuple_outputs_with_output_index(tmp_path: Path) -> None:
    pl.seed_everything(0)
    monitor = SaliencyMonitor([GradCAM(), Saliency()], num_samples=2, output=0)
    logger = TensorBoardLogger(str(tmp_path))
    trainer = pl.Trainer(callbacks=[monitor], logger=logger, **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(TupleOutputClassifier(num_classes=3, width=4), datamodule=tiny_datamodule())
    logger.finalize("success")
    acc = read_tensorboard(logger.log_dir)[0]
    assert {"xai/saliency/grad_cam/overlays", "xai/saliency/saliency/overlays"} <= set(acc.Tags()["images"])


def test_tuple_outputs_without_output_fail_early_with_the_fix(tmp_path: Path) -> None:
    pl.seed_everything(0)
    monitor = SaliencyMonitor([Saliency()], num_samples=2)
    trainer = pl.Trainer(callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    with pytest.raises(TypeError, match="output="):
        trainer.fit(TupleOutputClassifier(num_classes=3, width=4), datamodule=tiny_datamodule())
    assert trainer.global_step == 0


def test_monitor_images_share_lightnings_step(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="steps")
    fit(tmp_path, [SaliencyMonitor([GradCAM()], num_samples=2)], logger=logger, max_epochs=2)
    accs = read_tensorboard(logger.log_dir)
    val_steps = sorted({e.step for a in accs if "val/acc" in a.Tags()["scalars"] for e in a.Scalars("val/acc")})
    xai_steps = sorted(
        {
            e.step
            for a in accs
            if "xai/saliency/grad_cam/entropy" in a.Tags()["scalars"]
            for e in a.Scalars("xai/saliency/grad_cam/entropy")
        }
    )
    assert xai_steps == val_steps and len(val_steps) == 2


@pytest.mark.parametrize("precision", ["bf16-true", "bf16-mixed"])
def test_low_precision_fits(tmp_path: Path, precision: str) -> None:
    from lightning_xai.attribution import IntegratedGradients

    monitor = SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=4)], num_samples=2, synchronous_logging=True)
    logger = TensorBoardLogger(str(tmp_path))
    fit(tmp_path, [monitor], logger=logger, max_epochs=1, precision=precision)
    runs = monitor.history("grad_cam")
    assert len(runs) == 1 and torch.isfinite(runs[0][1]).all()
    accs = read_tensorboard(logger.log_dir)
    values = [
        e.value
        for a in accs
        if "xai/saliency/grad_cam/nonfinite" in a.Tags()["scalars"]
        for e in a.Scalars("xai/saliency/grad_cam/nonfinite")
    ]
    assert values == [0.0]


def test_explainer_names_for_two_of_one_class() -> None:
    monitor = SaliencyMonitor([GradCAM(layer="features.4"), GradCAM(layer="features.7"), Saliency()])
    assert monitor.names == ["grad_cam@features.4", "grad_cam@features.7", "saliency"]
    named = SaliencyMonitor([GradCAM(), Saliency()], names=["cam", "grad"])
    assert named.names == ["cam", "grad"]
    with pytest.raises(ValueError, match="distinct"):
        SaliencyMonitor([GradCAM(), Saliency()], names=["a", "a"])
    with pytest.raises(ValueError, match="one non-empty str per explainer"):
        SaliencyMonitor([GradCAM(), Saliency()], names=["a"])


def test_more_probe_samples_than_data_warns(tmp_path: Path) -> None:
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    monitor = SaliencyMonitor([GradCAM()], num_samples=8, probe=(x, y))
    trainer = pl.Trainer(callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    with pytest.warns(UserWarning, match="num_samples=8.*only 3"):
        monitor.setup(trainer, tiny_model(), "fit")
    assert len(monitor.probe) == 3


def test_tcav_monitor_reads_tuple_outputs_with_output_index(tmp_path: Path) -> None:
    from lightning_xai.callbacks import TCAVMonitor
    from lightning_xai.data import ShapesDataset

    concept = ShapesDataset(num_samples=12, image_size=16, num_classes=3, seed=5).images
    pool = ShapesDataset(num_samples=24, image_size=16, num_classes=3, seed=6).images
    monitor = TCAVMonitor(
        {"shapes": concept},
        layers="features.6",
        target_classes=[0],
        n_random=2,
        random_examples=pool,
        num_samples=6,
        output=0,
        synchronous_logging=True,
    )
    logger = TensorBoardLogger(str(tmp_path))
    pl.seed_everything(0)
    trainer = pl.Trainer(callbacks=[monitor], logger=logger, **trainer_kwargs(tmp_path, max_epochs=1))
    # the model returns (logits, features): with output=0 the monitor scores the logits
    trainer.fit(TupleOutputClassifier(num_classes=3, width=4), datamodule=tiny_datamodule())
    logger.finalize("success")
    acc = read_tensorboard(logger.log_dir)[0]
    assert any("tcav" in tag for tag in acc.Tags()["scalars"])
