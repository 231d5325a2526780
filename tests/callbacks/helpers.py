"""Importable helpers for callback tests (ddp_spawn pickles what it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import ExplainContext, Explainer
from lightning_xai.data import ShapesDataModule
from lightning_xai.demo import ShapesClassifier


class NaNExplainer(Explainer):
    """Returns NaN maps on every call after the first (the dry run), to test that training goes on."""

    registry_name = "test_nan"
    region = True
    signed = False

    def __init__(self) -> None:
        self._calls = 0

    def _attribute(self, model: nn.Module, inputs: Tensor, target: Any, ctx: ExplainContext) -> Tensor:
        self._calls += 1
        return torch.full((inputs.shape[0], 1, *inputs.shape[-2:]), float("nan"))


def tiny_datamodule(**kwargs: Any) -> ShapesDataModule:
    defaults = dict(batch_size=16, num_train=64, num_val=32, image_size=16, num_classes=3, seed=0)
    defaults.update(kwargs)
    return ShapesDataModule(**defaults)


def tiny_model(num_classes: int = 3) -> ShapesClassifier:
    return ShapesClassifier(num_classes=num_classes, width=4, dropout=0.25)


def trainer_kwargs(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(tmp_path),
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=True,
    )
    kwargs.update(overrides)
    return kwargs


def fit(
    tmp_path: Path, callbacks: list[pl.Callback], seed: int = 0, dm_kwargs: dict | None = None, **overrides: Any
) -> ShapesClassifier:
    pl.seed_everything(seed, verbose=False)
    dm = tiny_datamodule(**(dm_kwargs or {}))
    model = tiny_model(dm.num_classes)
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model, datamodule=dm)
    for logger in trainer.loggers:
        logger.finalize("success")
    return model


def read_tensorboard(log_dir: str | Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {log_dir}"
    accs = []
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        accs.append(acc)
    return accs


from lightning_xai.callbacks import SaliencyMonitor  # noqa: E402


class RecordingSaliencyMonitor(SaliencyMonitor):
    """A SaliencyMonitor that also saves what rank zero publishes (under ddp_spawn, callback state
    lives in the child processes, so the test reads this file)."""

    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def run(self, trainer, pl_module):  # type: ignore[override]
        self._trainer_world = trainer.world_size
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        super().run(trainer, pl_module)

    def render(self, sinks, info, probe, results):  # type: ignore[override]
        if not self.dry_running:
            torch.save(
                {
                    "results": {k: v.cpu() for k, v in results.items()},
                    "probe": probe.to("cpu").state_dict(),
                    "weights": self._weights,
                    "world_size": self._trainer_world,
                },
                self.out_file,
            )
        super().render(sinks, info, probe, results)


class FlatMLP(pl.LightningModule):
    """An MLP on flat vectors (what a newcomer trains on 784-feature Fashion-MNIST rows)."""

    def __init__(self, features: int = 48, num_classes: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class TupleOutputClassifier(ShapesClassifier):
    """Returns ``(logits, features)`` from forward, as many Lightning models do."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        features = torch.flatten(self.pool(self.features(x)), 1)
        return self.fc(self.dropout(features)), features

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        logits, _ = self(batch[0])
        loss = torch.nn.functional.cross_entropy(logits, batch[1])
        self.log(f"{stage}/loss", loss)
        return loss


class PlainCNN(pl.LightningModule):
    """Any LightningModule (not a ShapesClassifier subclass), for the CLI."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(6, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


from lightning_xai.callbacks import TracInMonitor  # noqa: E402


class RecordingTracInMonitor(TracInMonitor):
    """A TracInMonitor that saves, after every run on rank zero, its sums and the weights they
    were computed at (under ddp_spawn the callback's state lives in the child processes)."""

    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def run(self, trainer, pl_module):  # type: ignore[override]
        weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        super().run(trainer, pl_module)
        if trainer.is_global_zero:
            torch.save(
                {
                    "self_influence": self.self_influence,
                    "probe_scores": self.probe_scores,
                    "probe": self.probe.to("cpu").state_dict(),
                    "weights": weights,
                    "learning_rate": self.checkpoints[-1]["learning_rate"],
                    "world_size": trainer.world_size,
                },
                self.out_file,
            )
