"""The machinery every lightning_xai monitor reuses: schedule, probe set, sinks, distribution.

A monitor decides *when* (a schedule) and *on what* (a fixed probe set chosen at ``setup``) to
run a library call, then hands the tensors to :mod:`lightning_xai.render`. It never computes an
explanation itself and never talks to a logger backend directly.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_xai._validation import check_int
from lightning_xai.data.probe import Probe, select_probe
from lightning_xai.render.sinks import Sink, check_loggers, sinks_for

__all__ = ["XAIMonitor"]


class XAIMonitor(Callback):
    """Base class of the lightning_xai monitors.

    Subclasses implement :meth:`compute` (runs on every rank over this rank's shard of the probe
    set) and :meth:`publish` (rank zero only, with the gathered results and the sinks).

    Schedule: by default at the end of every ``every_n_epochs``-th validation epoch (at the end of
    the training epoch when the run has no validation loop); with ``every_n_steps`` after every
    n-th optimizer step instead. Never during the sanity check or a ``fast_dev_run``.

    Args:
        num_samples: Size of the probe set, chosen once at ``setup``, class-balanced.
        every_n_epochs: Run every n epochs (ignored when ``every_n_steps`` is set).
        every_n_steps: Run every n training steps instead of at epoch ends.
        seed: Seed of the probe selection: the order in which a Dataset or tensors are read, or the
            shuffling of a shuffled DataLoader (an unshuffled loader is read in its own order).
        probe: Optional user-provided probe: a tuple ``(inputs[, targets[, masks]])`` of tensors, or
            a ``Dataset``/``DataLoader``. By default the probe is read from the validation
            dataloader (or the training dataloader when there is none).
    """

    def __init__(
        self,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        every_n_steps: Optional[int] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
    ) -> None:
        check_int("num_samples", num_samples, 1)
        check_int("every_n_epochs", every_n_epochs, 1)
        check_int("every_n_steps", every_n_steps, 1, allow_none=True)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.seed = seed
        self._user_probe = probe
        self.probe: Optional[Probe] = None
        self._last_epoch_run = -1
        self._last_step_run = -1
        self._sinks: list[Sink] = []

    # -- state ---------------------------------------------------------------------------------
    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._state_key_fields())

    def _state_key_fields(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "every_n_epochs": self.every_n_epochs,
            "every_n_steps": self.every_n_steps,
        }

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "probe": None if self.probe is None else self.probe.state_dict(),
            "last_epoch_run": self._last_epoch_run,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        probe = state_dict.get("probe")
        if probe is not None:
            self.probe = Probe.from_state_dict(probe)
        self._last_epoch_run = state_dict.get("last_epoch_run", -1)

    # -- setup ---------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_loggers(trainer.loggers)
        self.check(pl_module)
        if self.probe is None:
            # Reading a dataloader draws from the global RNG (its base seed): keep training's stream.
            with torch.random.fork_rng(devices=[]):
                self.probe = select_probe(self._probe_source(trainer), num_samples=self.num_samples, seed=self.seed)
        if len(self.probe) == 0:
            raise ValueError(f"{type(self).__name__}: the probe set is empty; is the validation dataloader empty?")

    def _probe_source(self, trainer: pl.Trainer) -> Any:
        if self._user_probe is not None:
            return self._user_probe
        for source in (trainer.fit_loop.epoch_loop.val_loop._data_source, trainer.fit_loop._data_source):
            if source.is_defined():
                loader = source.dataloader()
                if isinstance(loader, (list, tuple)):
                    loader = loader[0] if loader else None
                if isinstance(loader, dict):
                    loader = next(iter(loader.values()), None)
                if loader is not None:
                    return loader
        raise ValueError(
            f"{type(self).__name__}: found no validation or training dataloader to choose a probe set from; "
            "pass `probe=(inputs, targets)`."
        )

    def check(self, pl_module: pl.LightningModule) -> None:
        """Validate the monitor's configuration against the model (called at ``setup``)."""

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sinks = sinks_for(trainer.loggers) if trainer.is_global_zero else []
        assert self.probe is not None
        self.probe = self.probe.to(pl_module.device)
        self.dry_run(pl_module)

    def dry_run(self, pl_module: pl.LightningModule) -> None:
        """Run the computation once on one probe sample so shape errors surface before training."""
        assert self.probe is not None
        self.compute(pl_module, self.probe[:1])

    # -- schedule ------------------------------------------------------------------------------
    def _skip(self, trainer: pl.Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    def _epoch_due(self, trainer: pl.Trainer) -> bool:
        return (
            self.every_n_steps is None
            and self._last_epoch_run != trainer.current_epoch
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not self._skip(trainer) and self._epoch_due(trainer):
            self._run(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs without a validation loop (validation, when it runs, ends before this hook).
        if not self._skip(trainer) and self._epoch_due(trainer):
            self._run(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps is not None
            and not self._skip(trainer)
            and step != self._last_step_run
            and step % self.every_n_steps == 0
        ):
            self._last_step_run = step
            self._run(trainer, pl_module)

    # -- one run -------------------------------------------------------------------------------
    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.probe is not None
        self._last_epoch_run = trainer.current_epoch
        probe = self.probe.to(pl_module.device)
        world, rank = trainer.world_size, trainer.global_rank
        n = len(probe)
        if world > 1:
            per_rank = math.ceil(n / world)
            index = torch.arange(rank * per_rank, (rank + 1) * per_rank).clamp_max(n - 1)
            results = self.compute(pl_module, probe[index])
            results = {k: self._gather(trainer, v, n) for k, v in results.items()}
        else:
            results = self.compute(pl_module, probe)
        if trainer.is_global_zero:
            self.publish(trainer, pl_module, probe, results, self._sinks)
            for sink in self._sinks:
                sink.flush()

    @staticmethod
    def _gather(trainer: pl.Trainer, value: Tensor, n: int) -> Tensor:
        gathered = trainer.strategy.all_gather(value.contiguous())  # [world, per_rank, ...]
        return gathered.reshape(-1, *value.shape[1:])[:n]

    @abstractmethod
    def compute(self, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        """Compute this rank's share: a dict of tensors whose first dimension is the probe index."""

    @abstractmethod
    def publish(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        probe: Probe,
        results: dict[str, Tensor],
        sinks: list[Sink],
    ) -> None:
        """Render and log the gathered results (rank zero only)."""

    def _warn(self, message: str) -> None:
        rank_zero_warn(f"{type(self).__name__}: {message}")
