"""The machinery every lightning_xai monitor reuses, in two layers.

:class:`MonitorBase` knows *when* to run (a schedule, an optional time budget), how to keep state
in checkpoints (``state_key``, ``state_dict``), where results go (one sink per logger, written by a
bounded background worker on rank zero), and how to spread work over DDP ranks (shard a list of
work, gather tensors, stream the training set without touching the training stream). Subclasses
implement :meth:`MonitorBase.run`.

:class:`ProbeMonitor` adds a fixed, class-balanced probe set chosen at ``setup`` and kept in the
checkpoint: each run computes per-probe rows on every rank (:meth:`ProbeMonitor.compute`), gathers
them, and renders them in the background (:meth:`ProbeMonitor.render`).

A monitor decides when and on what to run a library call; it never computes an explanation
itself and never talks to a logger backend directly.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import math
import random
import re
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, Subset
from typing_extensions import override

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import OutputType
from lightning_xai.data.probe import Probe, select_probe
from lightning_xai.sinks import BackgroundWriter, DryRunSink, Sink, check_loggers, sinks_for

__all__ = ["RunInfo", "MonitorBase", "ProbeMonitor"]


@dataclass(frozen=True)
class RunInfo:
    """What a background render gets instead of the trainer.

    Attributes:
        step: The step Lightning logs its own metrics at (so our images and scalars share the
            x-axis with ``val/*`` and ``train/*``).
        epoch: The current epoch.
    """

    step: int
    epoch: int


def _log_step(trainer: pl.Trainer) -> int:
    # Lightning logs metrics at `fit_loop.epoch_loop._batches_that_stepped` (LoggerConnector.log_metrics);
    # there is no public accessor for it. `global_step` is one ahead of it at validation-epoch end.
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return int(step) if isinstance(step, int) else int(trainer.global_step)


def _first_loader(loader: Any) -> Optional[DataLoader]:
    """The first DataLoader in what ``trainer.train_dataloader`` / a data source returns."""
    if isinstance(loader, DataLoader):
        return loader
    if isinstance(loader, (list, tuple)):
        for item in loader:
            found = _first_loader(item)
            if found is not None:
                return found
    if isinstance(loader, dict):
        for item in loader.values():
            found = _first_loader(item)
            if found is not None:
                return found
    iterables = getattr(loader, "iterables", None)  # a CombinedLoader
    if iterables is not None and iterables is not loader:
        return _first_loader(iterables)
    return None


def _move(batch: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(batch, Tensor):
        return fn(batch)
    if isinstance(batch, dict):
        return {k: _move(v, fn) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [_move(v, fn) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch


class MonitorBase(Callback):
    """The scheduling base of every lightning_xai monitor.

    Schedule: by default at the end of every ``every_n_epochs``-th validation epoch (at the end of
    the training epoch when the run has no validation loop); with ``every_n_train_steps`` after every
    n-th optimizer step instead. Never during the sanity check or a ``fast_dev_run``. With
    ``max_overhead`` a due run is skipped (and the skip logged as ``xai/<key>/skipped_runs``)
    while the time the monitor has spent on the training thread exceeds that fraction of the
    training time so far, so the cost stays bounded without tuning the schedule by hand.

    Subclasses implement :meth:`run` (called on every rank) and may override :meth:`check`
    (``setup``: configuration errors), :meth:`prepare` (fit start, every rank) and
    :meth:`dry_run` (fit start: exercise the whole path once, so nothing fails later for a reason
    knowable at the start). Results are handed to :meth:`publish`, which renders and writes them
    on a background thread on rank zero.

    Args:
        every_n_epochs: Run every n epochs (ignored when ``every_n_train_steps`` is set).
        every_n_train_steps: Run every n optimizer steps instead of at epoch ends.
        max_overhead: Optional time budget as a fraction of training time (``0.05``: at most 5%
            spent by this monitor on the training thread: its runs, fit-start preparation and
            anything wrapped in :meth:`timed`, such as forward hooks); ``None`` runs on schedule.
        synchronous_logging: Render and write on the training thread (``True``) or on the
            background writer (``False``). ``None`` (default) decides at fit start: in the
            background when the model is on an accelerator (the device keeps training while the
            CPU renders), on the training thread when it is on the CPU (there a background thread
            only competes with training for the cores and the GIL, which costs more than it
            hides; the measurements are on the docs' results page).
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        check_int("every_n_epochs", every_n_epochs, 1)
        check_int("every_n_train_steps", every_n_train_steps, 1, allow_none=True)
        if max_overhead is not None:
            check_float("max_overhead", max_overhead, 0.0, 10.0)
            if max_overhead <= 0:
                raise ValueError(f"Expected argument `max_overhead` to be a float > 0 or None, but got {max_overhead}.")
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.max_overhead = max_overhead
        self.synchronous_logging = synchronous_logging
        self._last_epoch_run = -1
        self._last_step_run = -1
        self._sinks: list[Sink] = []
        self._writer = BackgroundWriter(
            name=f"lightning-xai-{type(self).__name__}", synchronous=bool(synchronous_logging)
        )
        self._spent = 0.0
        self._fit_start_time: Optional[float] = None
        self._skipped_runs = 0
        self._dry_running = False
        self._step_offset = 0

    @property
    def dry_running(self) -> bool:
        """``True`` while :meth:`dry_run` renders into encode-only sinks: renders must keep no history then."""
        return self._dry_running

    # -- identity and state --------------------------------------------------------------------
    @property
    def log_key(self) -> str:
        """The group every tag of this monitor is logged under: ``xai/<log_key>/...``, lower case
        (``saliency``, ``metrics``, ``sanity``, ``tcav``, ``dissection``, ``tracin``, ``prototypes``,
        ``patterns``); by default the class name without ``Monitor``, in snake case."""
        name = type(self).__name__.removesuffix("Monitor")
        return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self._state_key_fields())

    def _state_key_fields(self) -> dict[str, Any]:
        """The configuration that makes two instances of one class distinct (extend in subclasses)."""
        return {
            "every_n_epochs": self.every_n_epochs,
            "every_n_steps": self.every_n_train_steps,
        }  # the key's field name is pinned (old checkpoints)

    @override
    def state_dict(self) -> dict[str, Any]:
        self._writer.flush()  # state the background renders update must be complete
        return {
            "last_epoch_run": self._last_epoch_run,
            "last_step_run": self._last_step_run,
            "skipped_runs": self._skipped_runs,
            "key_fields": _plain(
                self._state_key_fields()
            ),  # so a resume with another configuration can say what changed
        }

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Warn when the checkpoint holds state for this monitor's class under another configuration.

        The ``state_key`` includes the configuration, so a monitor whose settings changed between runs
        (one explainer added, say) finds no state and starts its history over; the warning names the
        fields that differ, against the checkpoint's same-class entry that is closest (fewest
        differing fields) among those no other callback of this run claims.
        """
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        claimed = {getattr(cb, "state_key", None) for cb in trainer.callbacks}
        prefix = type(self).__qualname__ + "{"
        mine = _plain(self._state_key_fields())
        diffs = []
        for key, state in states.items():
            if not isinstance(key, str) or not key.startswith(prefix) or key in claimed:
                continue
            theirs = state.get("key_fields") if isinstance(state, dict) else None
            if not isinstance(theirs, dict):
                theirs = _fields_from_key(key[len(type(self).__qualname__) :])
            if theirs is None:
                continue
            changed = [f for f in sorted(set(mine) | set(theirs)) if mine.get(f) != theirs.get(f)]
            diffs.append((len(changed), [(f, theirs.get(f), mine.get(f)) for f in changed]))
        if not diffs:
            return
        _, changed = min(diffs, key=lambda d: d[0])
        what = "; ".join(f"{f} {old!r} but this monitor has {new!r}" for f, old, new in changed)
        self.warn(f"the checkpoint holds state for {what}; its history starts over.")

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._last_epoch_run = state_dict.get("last_epoch_run", -1)
        self._last_step_run = state_dict.get("last_step_run", -1)
        self._skipped_runs = state_dict.get("skipped_runs", 0)

    # -- lifecycle -----------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_loggers(trainer.loggers)
        self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Validate the configuration against the model and data (at ``setup``; raise ``ValueError``)."""

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sinks = sinks_for(trainer.loggers) if trainer.is_global_zero else []
        synchronous = self.synchronous_logging
        if synchronous is None:
            synchronous = pl_module.device.type == "cpu"
        self._writer.synchronous = bool(synchronous)
        self._spent = 0.0
        self._fit_start_time = time.perf_counter()
        with self.timed():  # fit-start work counts against the budget too
            self.prepare(trainer, pl_module)
            self.dry_run(trainer, pl_module)

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Per-fit preparation on every rank (move state to the model's device and dtype)."""

    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Exercise the whole path (compute, render, encoding) once on a tiny input at fit start."""

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._writer.close()
        for sink in self._sinks:
            sink.flush()

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._writer.flush()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Write what was computed before the failure; a render failure must not mask the original error.
        try:
            self._writer.close()
            for sink in self._sinks:
                sink.flush()
        except Exception as err:  # noqa: BLE001
            rank_zero_warn(f"{type(self).__name__}: could not flush its logs after an exception: {err}")

    # -- schedule ------------------------------------------------------------------------------
    def _skip(self, trainer: pl.Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run)

    def _epoch_due(self, trainer: pl.Trainer) -> bool:
        return (
            self.every_n_train_steps is None
            and self._last_epoch_run != trainer.current_epoch
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not self._skip(trainer) and self._epoch_due(trainer):
            self._last_epoch_run = trainer.current_epoch
            self._maybe_run(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs without a validation loop (validation, when it runs, ends before this hook).
        if not self._skip(trainer) and self._epoch_due(trainer):
            self._last_epoch_run = trainer.current_epoch
            # Lightning logs epoch-end metrics one step back (FitLoop.on_advance_end): so do we
            self._step_offset = -1
            try:
                self._maybe_run(trainer, pl_module)
            finally:
                self._step_offset = 0

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if (
            self.every_n_train_steps is not None
            and not self._skip(trainer)
            and step != self._last_step_run
            and step % self.every_n_train_steps == 0
        ):
            self._last_step_run = step
            self._maybe_run(trainer, pl_module)

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Count the block's wall time against this monitor's ``max_overhead`` budget.

        Wrap every piece of monitor work on the training thread outside :meth:`run` (forward
        hooks, fit-start preparation) in it; :meth:`run` is timed already. On an accelerator this
        is the host time (queued kernels are not waited for: a synchronisation would slow
        training). Cost: two ``perf_counter`` calls.
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            self._spent += time.perf_counter() - start

    def _budget_exceeded(self) -> bool:
        """This rank's own view: has the monitor spent more than ``max_overhead`` of the training time?"""
        if self.max_overhead is None or self._fit_start_time is None:
            return False
        training = max(time.perf_counter() - self._fit_start_time - self._spent, 1e-9)
        return self._spent / training > self.max_overhead

    def _over_budget(self, trainer: pl.Trainer) -> bool:
        # every rank must take the same decision, or the collectives of a run would hang
        return bool(trainer.strategy.reduce_boolean_decision(self._budget_exceeded(), all=False))

    def _maybe_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._over_budget(trainer):
            self._skipped_runs += 1
            if self._skipped_runs == 1:
                self.warn(
                    f"skipping runs to keep within max_overhead={self.max_overhead} of training time "
                    f"(logged as xai/{self.log_key}/skipped_runs)."
                )
            self._publish_scalars(trainer, {f"xai/{self.log_key}/skipped_runs": float(self._skipped_runs)})
            return
        with self.timed():
            self.run(trainer, pl_module)

    @abstractmethod
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One scheduled run, called on every rank (compute, then :meth:`publish`)."""

    # -- publishing ----------------------------------------------------------------------------
    def run_info(self, trainer: pl.Trainer) -> RunInfo:
        """The step and epoch a run's logs are written at."""
        return RunInfo(step=max(0, _log_step(trainer) + self._step_offset), epoch=int(trainer.current_epoch))

    def publish(self, trainer: pl.Trainer, render: Callable[[list[Sink], RunInfo], None]) -> None:
        """Queue ``render(sinks, info)`` on the background writer (rank zero; a no-op elsewhere).

        ``render`` must close over CPU tensors only (copy them with ``.cpu()`` first) and must not
        touch the trainer or the model: training goes on while it runs. Sinks are flushed after it.
        """
        if not trainer.is_global_zero:
            return
        info = self.run_info(trainer)
        sinks = list(self._sinks)

        def job() -> None:
            render(sinks, info)
            for sink in sinks:
                sink.flush()

        self._writer.submit(job, name=f"{type(self).__name__} step {info.step}")

    def _publish_scalars(self, trainer: pl.Trainer, scalars: dict[str, float]) -> None:
        def render(sinks: list[Sink], info: RunInfo) -> None:
            for sink in sinks:
                sink.log_scalars(scalars, info.step)

        self.publish(trainer, render)

    def flush(self) -> None:
        """Wait for every queued render/write of this monitor (raises a failure of one of them)."""
        self._writer.flush()

    @staticmethod
    def dry_run_sinks() -> list[Sink]:
        """Sinks that encode everything (PNG, tables, scalars) and write nothing, for :meth:`dry_run`."""
        return [DryRunSink()]

    # -- distribution helpers ------------------------------------------------------------------
    @staticmethod
    def shard(trainer: pl.Trainer, n: int) -> Tensor:
        """This rank's indices into ``range(n)``: contiguous blocks of ``ceil(n / world)``, the last
        rank's padded by repeating index ``n - 1`` (so every rank has the same count for
        :meth:`gather`)."""
        world, rank = trainer.world_size, trainer.global_rank
        if world <= 1:
            return torch.arange(n)
        per_rank = math.ceil(n / world)
        return torch.arange(rank * per_rank, (rank + 1) * per_rank).clamp_max(max(n - 1, 0))

    @staticmethod
    def gather(trainer: pl.Trainer, value: Tensor, n: int) -> Tensor:
        """All ranks' :meth:`shard` rows of ``value``, concatenated in rank order, first ``n`` kept."""
        if trainer.world_size <= 1:
            return value[:n]
        gathered = trainer.strategy.all_gather(value.contiguous())  # [world, per_rank, ...]
        return gathered.reshape(-1, *value.shape[1:])[:n]

    @staticmethod
    def to_model(trainer: pl.Trainer, pl_module: pl.LightningModule, x: Tensor) -> Tensor:
        """``x`` on the model's device, in the dtype the precision plugin feeds the model
        (``bf16-true``: bfloat16; mixed precision: unchanged, autocast handles it)."""
        x = x.to(pl_module.device)
        if x.is_floating_point():
            x = trainer.precision_plugin.convert_input(x)
        return x

    progress_interval_s: float = 30.0
    """Seconds between the rank-zero progress lines of a pass over the training set (:meth:`iter_dataset`)."""

    def iter_dataset(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        dataset: Optional[Any] = None,
        batch_size: Optional[int] = None,
    ) -> Iterator[tuple[Tensor, Any]]:
        """Stream the training examples the model trains on, without touching training.

        Yields ``(indices, batch)``: the dataset indices of the batch's examples and the batch with
        every tensor on the model's device (floating inputs in the model's dtype).

        *Which examples*: those the training dataloader's sampler (or batch sampler) yields, read
        from a copy of it (a ``SubsetRandomSampler([0..3])`` streams 0..3; a sampler's generator and
        state stay as they were). Under DDP, Lightning's ``DistributedSampler`` gives each rank its
        share; an index two ranks' shares hold (the sampler's padding) is read by the lower rank
        only, so results summed over ranks count every example once. *Order*: sorted, each index
        once: a random sampler yields another permutation every epoch, but the set is what matters.
        Without a training dataloader (a ``dataset`` given outside ``fit``) every index of
        ``dataset`` is read, strided over ranks.

        *Which view*: ``dataset`` (a map-style dataset, or a DataLoader whose dataset and
        ``collate_fn`` are used) is an alternative view of the same examples with the training
        dataset's length and indexing, typically without random augmentation (ProtoPNet's
        ``train_push_loader``); the indices still come from the training sampler.

        *Randomness*: the reads draw from their own random stream (torch CPU, the model's CUDA
        device, Python's ``random`` and NumPy), forked once from the global state at the start of
        the pass: successive batches draw different augmentations, and the global state the caller
        and training see between and after the reads is unchanged.

        *Cost*: one read of this rank's share. On an accelerator the reader uses the training
        loader's ``num_workers``, ``pin_memory``, ``worker_init_fn`` and ``multiprocessing_context``
        (never ``persistent_workers``, and not its ``generator``: drawing from it would change
        training's shuffling); on the CPU it reads in the main process. A rank-zero progress line
        with an ETA is logged every :attr:`progress_interval_s` seconds. When the Trainer received
        SIGTERM the pass stops between batches and raises Lightning's ``SIGTERMException``, as
        Lightning's own loops do: the run publishes nothing and the Trainer shuts down.

        Args:
            trainer: The trainer.
            pl_module: The model (for its device and precision).
            dataset: Optional view of the training examples (see above); default the training
                dataloader's dataset.
            batch_size: Default: the training dataloader's batch size (64 if unknown).

        Raises:
            ValueError: No map-style dataset to read (an ``IterableDataset`` training set: pass
                ``dataset=``), or ``dataset`` has another length than the training dataset.
            SIGTERMException: The Trainer received SIGTERM during the pass.
        """
        loader = _training_loader(trainer)
        view_loader = dataset if isinstance(dataset, DataLoader) else None
        view = view_loader.dataset if view_loader is not None else dataset
        train_set = getattr(loader, "dataset", None)
        name = type(self).__name__
        if view is None:
            view = train_set
        if not _map_style(view):
            raise ValueError(
                f"{name}: needs a map-style training dataset (with __len__ and __getitem__) to stream; got "
                f"{type(view).__name__}. Pass `dataset=` (a map-style view of the training examples)."
            )
        n = len(view)  # type: ignore[arg-type]
        indices: Optional[Tensor] = None
        if _map_style(train_set):
            if view is not train_set and len(train_set) != n:  # type: ignore[arg-type]
                raise ValueError(
                    f"{name}: `dataset` must index the same examples as the training dataset, but it holds {n} "
                    f"examples and the training dataset {len(train_set)}."  # type: ignore[arg-type]
                )
            indices = _sampler_indices(loader)  # type: ignore[arg-type]
        if indices is None:
            if loader is not None and view is train_set:
                raise ValueError(
                    f"{name}: cannot read which examples the training dataloader's sampler yields; pass "
                    "`dataset=` (a map-style view of the training examples)."
                )
            world, rank = trainer.world_size, trainer.global_rank
            indices = torch.arange(rank, n, world) if world > 1 else torch.arange(n)
        elif trainer.world_size > 1:
            indices = _own_share(trainer, indices)
        if batch_size is None:
            batch_size = getattr(view_loader, "batch_size", None) or getattr(loader, "batch_size", None) or 64
        collate = getattr(view_loader or loader, "collate_fn", None)
        reader = DataLoader(
            Subset(view, indices.tolist()),
            batch_size=batch_size,
            shuffle=False,
            collate_fn=collate,
            **_reader_kwargs(view_loader or loader, pl_module.device.type),
        )
        device_fn = lambda t: self.to_model(trainer, pl_module, t)  # noqa: E731
        rng = _RandomStream(pl_module.device)
        progress = _Progress(name, len(indices), self.progress_interval_s, trainer.is_global_zero)
        with rng.active():  # creating the iterator draws a base seed
            iterator = iter(reader)
        start = 0
        try:
            while True:
                if getattr(trainer, "received_sigterm", False):
                    progress.stopped(start)
                    raise SIGTERMException
                with rng.active():  # augmentations draw from the global RNG
                    try:
                        batch = next(iterator)
                    except StopIteration:
                        break
                size = _batch_size(batch)
                yield indices[start : start + size], _move(batch, device_fn)
                start += size
                progress.update(start)
        finally:
            del iterator  # shuts its worker processes down on every exit path
        progress.done(start)

    def warn(self, message: str) -> None:
        """A rank-zero warning prefixed with the class name."""
        rank_zero_warn(f"{type(self).__name__}: {message}")

    _warn = warn


def _map_style(dataset: Any) -> bool:
    return (
        dataset is not None
        and not isinstance(dataset, IterableDataset)
        and hasattr(dataset, "__len__")
        and hasattr(dataset, "__getitem__")
    )


def _training_loader(trainer: pl.Trainer) -> Optional[DataLoader]:
    """The training DataLoader (Lightning's, with its distributed sampler, once the fit loop has
    loaded it; before that, the one the fit loop will load), or ``None``."""
    loader = _first_loader(trainer.train_dataloader)
    if loader is None:
        source = getattr(getattr(trainer, "fit_loop", None), "_data_source", None)  # private: no public accessor
        if source is not None and source.is_defined():
            with torch.random.fork_rng(devices=[]):  # building a user's dataloader may draw from the RNG
                loader = _first_loader(source.dataloader())
    return loader


def _sampler_indices(loader: Optional[DataLoader]) -> Optional[Tensor]:
    """The sorted unique dataset indices one pass of ``loader``'s (batch) sampler yields, read from a
    copy of the sampler under a forked RNG (so the training sampler's generator and state are
    untouched); ``None`` when it yields no indices (an IterableDataset) or there is no loader."""
    if loader is None or isinstance(loader.dataset, IterableDataset):
        return None
    source = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    try:  # the dataset is shared, not copied; a sampler's generator is copied (drawing from it is ours)
        source = copy.deepcopy(source, memo={id(loader.dataset): loader.dataset})
    except Exception:  # noqa: BLE001 -- an uncopyable sampler is read as it is, under the forked RNG
        pass
    found: list[int] = []
    with torch.random.fork_rng(devices=[]):
        for item in source:
            if item is None:
                return None
            if isinstance(item, Tensor):
                found.extend(item.flatten().tolist())
            elif isinstance(item, (list, tuple)):
                found.extend(int(i) for i in item)
            else:
                found.append(int(item))
    return torch.tensor(sorted(set(found)), dtype=torch.long)


def _own_share(trainer: pl.Trainer, indices: Tensor) -> Tensor:
    """``indices`` less those a lower rank also holds (a DistributedSampler pads by repeating indices)."""
    device = trainer.strategy.root_device
    counts = trainer.strategy.all_gather(torch.tensor([indices.numel()], device=device)).flatten()
    padded = torch.full((int(counts.max()),), -1, dtype=torch.long, device=device)
    padded[: indices.numel()] = indices.to(device)
    everyone = trainer.strategy.all_gather(padded).reshape(len(counts), -1)
    lower = everyone[: trainer.global_rank].flatten()
    keep = ~torch.isin(indices.to(device), lower[lower >= 0])
    return indices[keep.cpu()]


def _reader_kwargs(loader: Optional[DataLoader], device_type: str) -> dict[str, Any]:
    """DataLoader arguments of a monitor's read of the training set on ``device_type``: on the CPU
    the main process reads (workers would compete with training for the cores); on an accelerator
    the training loader's worker and pinning settings, so the device does not wait on decoding."""
    if device_type == "cpu" or loader is None:
        return {"num_workers": 0}
    if loader.num_workers == 0:
        return {"num_workers": 0, "pin_memory": loader.pin_memory}
    kwargs: dict[str, Any] = {
        "num_workers": loader.num_workers,
        "pin_memory": loader.pin_memory,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "persistent_workers": False,
        "timeout": loader.timeout,
    }
    if loader.prefetch_factor is not None:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    return kwargs


class _RandomStream:
    """A random stream of its own for a monitor's reads, forked once from the global state: inside
    :meth:`active` the global generators (torch CPU, the CUDA device, Python, NumPy) continue this
    stream; outside they are as the caller left them."""

    def __init__(self, device: torch.device) -> None:
        self._cuda = device if device.type == "cuda" else None
        self._state = self._get()

    def _get(self) -> tuple[Any, ...]:
        cuda = torch.cuda.get_rng_state(self._cuda) if self._cuda is not None else None
        return torch.get_rng_state(), cuda, random.getstate(), _numpy_state()

    def _set(self, state: tuple[Any, ...]) -> None:
        cpu, cuda, py, np_state = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self._cuda)
        random.setstate(py)
        if np_state is not None:
            import numpy

            numpy.random.set_state(np_state)

    @contextmanager
    def active(self) -> Iterator[None]:
        outer = self._get()
        self._set(self._state)
        try:
            yield
        finally:
            self._state = self._get()
            self._set(outer)


def _numpy_state() -> Any:
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy comes with torch's usual installs
        return None
    return numpy.random.get_state()


class _Progress:
    """Rank-zero progress lines (done, total, elapsed, ETA) of a long pass, every ``interval`` seconds."""

    def __init__(self, name: str, total: int, interval: float, enabled: bool) -> None:
        self.name, self.total, self.interval, self.enabled = name, total, interval, enabled
        self.start = self.last = time.perf_counter()
        self.logged = False

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.interval or done >= self.total:
            return
        self.last, self.logged = now, True
        elapsed = now - self.start
        eta = elapsed / max(done, 1) * (self.total - done)
        rank_zero_info(
            f"{self.name}: read {done}/{self.total} training examples ({100 * done / max(self.total, 1):.0f}%), "
            f"{elapsed:.0f} s, ETA {eta:.0f} s"
        )

    def done(self, done: int) -> None:
        if self.enabled and self.logged:
            rank_zero_info(f"{self.name}: read {done} training examples in {time.perf_counter() - self.start:.0f} s")

    def stopped(self, done: int) -> None:
        if self.enabled:
            rank_zero_info(
                f"{self.name}: SIGTERM received; stopped the pass after {done}/{self.total} examples, "
                "the run's results are dropped"
            )


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    """The state-key fields as plain Python literals (as ``_generate_state_key`` writes them), else as reprs."""
    plain = _fields_from_key(repr(fields))
    return plain if plain is not None else {str(k): repr(v) for k, v in fields.items()}


def _fields_from_key(text: str) -> Optional[dict[str, Any]]:
    """The dict a ``_generate_state_key`` string holds after the class name, or ``None`` if unparseable."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_size(batch[0])
    raise TypeError(f"Cannot tell the batch size of a {type(batch).__name__}.")


class ProbeMonitor(MonitorBase):
    """A monitor over a fixed probe set: the same class-balanced inputs explained every run.

    The probe is chosen at ``setup`` (from the validation dataloader, the training dataloader
    when there is none, or ``probe=``) and kept in the checkpoint, so a resumed run explains the
    same images. Each run, every rank computes :meth:`compute` over its shard of the probe; the
    rows are gathered and rank zero renders them with :meth:`render` in the background.

    Args:
        num_samples: Size of the probe set, chosen once at ``setup``, class-balanced.
        every_n_epochs: Run every n epochs (ignored when ``every_n_train_steps`` is set).
        every_n_train_steps: Run every n training steps instead of at epoch ends.
        seed: Seed of the probe selection: the order in which a Dataset or tensors are read, or the
            shuffling of a shuffled DataLoader (an unshuffled loader is read in its own order).
        probe: Optional user-provided probe: a tuple ``(inputs[, targets[, masks]])`` of tensors, or
            a ``Dataset``/``DataLoader``. By default the probe is read from the validation
            dataloader (or the training dataloader when there is none).
        output: How to pick the ``[B, C]`` scores when the model returns a tuple, dict or
            dataclass: an index, a key/attribute name or a callable (see
            :func:`~lightning_xai.attribution.base.select_output`).
        max_overhead: Time budget as a fraction of training time (see :class:`MonitorBase`).
        synchronous_logging: Render on the training thread (``True``), in the background
            (``False``), or decide by the model's device (``None``; see :class:`MonitorBase`).
    """

    def __init__(
        self,
        *,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        check_int("num_samples", num_samples, 1)
        check_int("seed", seed)
        if output is not None and not isinstance(output, (int, str)) and not callable(output):
            raise TypeError(
                f"Expected argument `output` to be None, an int index, a str key or a callable, but got {output!r}."
            )
        self.num_samples = num_samples
        self.seed = seed
        self.output = output
        self._user_probe = probe
        self.probe: Optional[Probe] = None

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        # num_samples first: the key is pinned (changing it orphans the state in existing checkpoints)
        return {"num_samples": self.num_samples, **super()._state_key_fields()}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["probe"] = None if self.probe is None else self.probe.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        probe = state_dict.get("probe")
        if probe is not None:
            self.probe = Probe.from_state_dict(probe)

    # -- setup ---------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        check_loggers(trainer.loggers)
        if self.probe is None:
            # Reading a dataloader draws from the global RNG (its base seed): keep training's stream.
            with torch.random.fork_rng(devices=[]):
                self.probe = select_probe(self._probe_source(trainer), num_samples=self.num_samples, seed=self.seed)
        if len(self.probe) == 0:
            raise ValueError(f"{type(self).__name__}: the probe set is empty; is the validation dataloader empty?")
        if len(self.probe) < self.num_samples and trainer.is_global_zero:
            self.warn(
                f"asked for num_samples={self.num_samples} probe inputs but the data holds only {len(self.probe)}; "
                f"using {len(self.probe)}."
            )
        self.check(trainer, pl_module)

    def _probe_source(self, trainer: pl.Trainer) -> Any:
        if self._user_probe is not None:
            return self._user_probe
        # No public API gives the validation dataloader before the validation loop first runs;
        # `_data_source` resolves datamodule / module / `fit(val_dataloaders=...)` exactly as the loops will.
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

    @override
    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.probe is not None
        probe = self.probe.to(pl_module.device)
        self.probe = Probe(self.to_model(trainer, pl_module, probe.inputs), probe.targets, probe.masks)

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Compute on one probe sample and render it into encode-only sinks, at fit start."""
        assert self.probe is not None
        sample = self.probe[:1]
        results = self.compute(trainer, pl_module, sample)
        if trainer.is_global_zero:
            cpu = {k: v.detach().cpu() for k, v in results.items()}
            self._dry_running = True
            try:
                self.render(self.dry_run_sinks(), self.run_info(trainer), sample.to("cpu"), cpu)
            finally:
                self._dry_running = False

    # -- one run -------------------------------------------------------------------------------
    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.probe is not None
        probe = self.probe
        n = len(probe)
        if trainer.world_size > 1:
            results = self.compute(trainer, pl_module, probe[self.shard(trainer, n)])
            results = {k: self.gather(trainer, v, n) for k, v in results.items()}
        else:
            results = self.compute(trainer, pl_module, probe)
        if not trainer.is_global_zero:
            return
        cpu_results = {k: v.detach().cpu() for k, v in results.items()}  # one copy off the device
        cpu_probe = probe.to("cpu")
        self.publish(trainer, lambda sinks, info: self.render(sinks, info, cpu_probe, cpu_results))

    @abstractmethod
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        """This rank's share: a dict of tensors whose first dimension is the probe index."""

    @abstractmethod
    def render(
        self,
        sinks: Sequence[Sink],
        info: RunInfo,
        probe: Probe,
        results: dict[str, Tensor],
    ) -> None:
        """Render and log the gathered results (rank zero, background thread, CPU tensors).

        During :meth:`dry_run` (``self.dry_running`` is ``True``; encode-only sinks) it must not
        change any history it keeps.
        """
