"""Callbacks that record what the training or a monitor did, for tests to assert on.

The ``Recording*`` monitors save what rank zero publishes (with the weights it was computed on) to
``out_file``: under ddp_spawn a callback's state lives in the child processes, so a test reads the
file. Importable by module path: ddp_spawn pickles them by reference."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_xai.callbacks import (
    DissectionMonitor,
    MetricsMonitor,
    SaliencyMonitor,
    SanityCheckMonitor,
    TCAVMonitor,
    TracInMonitor,
)


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


class RecordingTCAVMonitor(TCAVMonitor):
    """Saves what rank zero publishes, the weights and the chosen data (state lives in the children)."""

    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def run(self, trainer, pl_module):  # type: ignore[override]
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self._world = trainer.world_size
        super().run(trainer, pl_module)

    def render(self, sinks, info, packed, vectors, concepts, classes, history):  # type: ignore[override]
        if not self.dry_running:
            torch.save(
                {
                    "packed": packed,
                    "weights": self._weights,
                    "world_size": self._world,
                    "inputs": {k: v.cpu() for k, v in self._inputs.items()},
                    "randoms": [r.cpu() for r in self._randoms],
                },
                self.out_file,
            )
        super().render(sinks, info, packed, vectors, concepts, classes, history)


class RecordingDissectionMonitor(DissectionMonitor):
    """Saves what rank zero publishes (IoU, thresholds), the weights and the world size."""

    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def run(self, trainer, pl_module):  # type: ignore[override]
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self._world = trainer.world_size
        super().run(trainer, pl_module)

    def render(self, sinks, info, result, examples, history):  # type: ignore[override]
        if not self.dry_running:
            torch.save(
                {
                    "iou": result.iou,
                    "thresholds": result.thresholds,
                    "weights": self._weights,
                    "world_size": self._world,
                },
                self.out_file,
            )
        super().render(sinks, info, result, examples, history)


class _Recording:
    """Saves what rank zero publishes, with the weights it was computed on, to ``out_file``."""

    out_file: str

    def run(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self._world = trainer.world_size
        super().run(trainer, pl_module)  # type: ignore[misc]

    def render(self, sinks, info, probe, results):  # type: ignore[no-untyped-def]
        if not self.dry_running:  # type: ignore[attr-defined]
            torch.save(
                {
                    "results": {k: v.cpu() for k, v in results.items()},
                    "probe": probe.to("cpu").state_dict(),
                    "weights": self._weights,
                    "world_size": self._world,
                },
                self.out_file,
            )
        super().render(sinks, info, probe, results)  # type: ignore[misc]


class RecordingMetricsMonitor(_Recording, MetricsMonitor):
    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file


class RecordingSanityCheckMonitor(_Recording, SanityCheckMonitor):
    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file


class PushRecorder(pl.Callback):
    """Listed before PrototypePush: keeps the prototypes as they were before each push and the weights
    at each training-epoch end (after that epoch's validation and push), and (rank zero, at fit end)
    saves them with the final weights to ``out_file`` (ddp_spawn runs in children)."""

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file
        self.before: dict[int, Tensor] = {}
        self.requires_grad: dict[int, dict[str, bool]] = {}
        self.after: dict[int, dict[str, Tensor]] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        head = pl_module.head
        self.requires_grad[trainer.current_epoch] = {
            "backbone": pl_module.features[0].weight.requires_grad,
            "prototypes": head.prototypes.requires_grad,
            "last_layer": head.last_layer.weight.requires_grad,
        }
        self.after[trainer.current_epoch] = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.before[trainer.current_epoch] = pl_module.head.prototypes.detach().cpu().clone()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
            saved = {"before": self.before, "after": self.after, "state": state, "world_size": trainer.world_size}
            torch.save(saved, self.out_file)


class StateSnapshots(pl.Callback):
    """At each validation-epoch end, snapshots what the push must leave alone: the RNG, every module's
    mode, every parameter's requires_grad and .grad, BatchNorm statistics; plus the prototypes."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.snapshots.append(
            {
                "rng": torch.get_rng_state(),
                "modes": [m.training for m in pl_module.modules()],
                "requires_grad": [p.requires_grad for p in pl_module.parameters()],
                "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
                "buffers": {k: v.clone() for k, v in pl_module.state_dict().items() if "running" in k},
                "prototypes": pl_module.head.prototypes.detach().clone(),
            }
        )


class BatchLog(pl.Callback):
    """The training stream as seen by the training step: labels and image sums of every batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self.batches.append((batch[1].tolist(), float(batch[0].sum())))
