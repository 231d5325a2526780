"""PatternEstimator: the signal patterns of PatternNet / PatternAttribution, estimated during training."""

from __future__ import annotations

import os
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import observe, observing, register_own_forward_hook
from lightning_xai.attribution.propagation.patterns import (
    Patterns,
    PatternStatistics,
    merged_batchnorms,
    pattern_layers,
    set_patterns,
)
from lightning_xai.callbacks.base import MonitorBase, RunInfo
from lightning_xai.sinks import Sink

__all__ = ["PatternEstimator"]


class PatternEstimator(MonitorBase):
    """Estimates PatternNet's signal patterns (Kindermans et al. 2018) from the training batches.

    Forward hooks on the Linear/Conv layers read each layer's input and output during the
    training forward passes the model makes anyway and add them to float64 sums
    (:class:`~lightning_xai.attribution.propagation.patterns.PatternStatistics`, no autograd):
    no extra forward pass, no second pass over the data, nothing written to the model, its
    activations or the random streams, so the weights train bit for bit as without it. The hooks
    are registered at fit start and removed at fit end and on an exception.

    Only the training step's own forward passes count: recording opens at
    ``on_train_batch_start`` and closes at the first ``on_before_backward`` (automatic
    optimisation: the first closure evaluation, so a closure re-evaluated by an optimizer such as
    LBFGS counts once) or at ``on_train_batch_end`` (manual optimisation: every forward of
    ``training_step``). Under gradient accumulation every micro-batch counts. Forward passes inside
    :func:`~lightning_xai.attribution.observe` (every explainer, metric and monitor of this
    library), in validation, in the sanity check and on deep copies of the model never count.

    Cost: the hooks compute, per recorded batch and Linear/Conv layer, four weight-gradient-sized
    sums (about four times the layer's forward FLOPs; +130% per training step on a small CNN on
    the CPU). ``every_n_batches`` divides that by n; with ``max_overhead`` the hook time counts
    against the budget and recording pauses while the monitor is over it.
    A layer a BatchNorm directly follows is estimated as the merged layer the explainers
    propagate through: its output mapped by the BatchNorm's eval-mode affine map (running
    statistics), patterns normalised with the merged weight.

    At each scheduled run (every ``every_n_epochs`` epochs by default) the sums, all-reduced
    across DDP ranks, become patterns with the layers' current weights; they are published for the
    model (:func:`~lightning_xai.attribution.propagation.patterns.set_patterns`), so
    ``PatternNet()`` and ``PatternAttribution()`` without ``patterns=`` (in a ``SaliencyMonitor``
    too) use the latest ones, and saved to ``path`` when given (load with
    ``PatternNet(patterns=path)``; a plain ``torch.save`` dict, ``weights_only``-loadable). With
    ``reset_each_run`` the sums restart after each run, so patterns follow the weights as they
    train. The sums and the latest patterns are kept in the checkpoint.

    Args:
        layers: Dotted names of the Linear/Conv layers (default: all of them).
        every_n_epochs: Turn the sums into patterns every n epochs.
        every_n_train_steps: ... or every n optimizer steps instead.
        reset_each_run: Restart the sums after every run.
        path: File the latest patterns are saved to (rank zero), or ``None``.
        initial_batches: At fit start (unless resumed with patterns), estimate first patterns from
            this many batches of the training set (streamed with ``iter_dataset``, eval mode, no
            autograd, inside ``observe``), so explainers scheduled before the first run (a
            ``SaliencyMonitor``'s dry run) have patterns; ``0`` skips it. Training's own sums start
            empty either way.
        every_n_batches: Record the training forward of every n-th training batch (``batch_idx %
            n == 0``, micro-batches under gradient accumulation); the patterns are then estimated
            from 1/n of the samples, at 1/n of the hooks' cost.
        dataset: Optional view of the training examples the initial estimate reads (same length
            and indexing as the training dataset, typically without augmentation; see
            :meth:`~lightning_xai.callbacks.base.MonitorBase.iter_dataset`).
        max_overhead: See :class:`~lightning_xai.callbacks.base.MonitorBase`; the hooks' time
            counts, and no batch is recorded while the estimator is over budget.
        synchronous_logging: Render on the training thread (see :class:`~lightning_xai.callbacks.base.MonitorBase`).

    Raises:
        TypeError: ``layers``, ``reset_each_run`` or ``path`` of the wrong type.
        ValueError: a negative ``initial_batches`` or ``every_n_batches < 1``.

    Examples:
        >>> estimator = PatternEstimator(layers=["features.0", "fc"], path="patterns.pt")
        >>> estimator.layers
        ['features.0', 'fc']
    """

    log_key = "patterns"  # type: ignore[assignment]

    def __init__(
        self,
        *,
        layers: Optional[list[str]] = None,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        reset_each_run: bool = True,
        path: Optional[str] = None,
        initial_batches: int = 1,
        every_n_batches: int = 1,
        dataset: Optional[Any] = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        self.dataset = dataset
        if layers is not None and (
            not isinstance(layers, (list, tuple)) or not all(isinstance(n, str) for n in layers)
        ):
            raise TypeError(f"Expected argument `layers` to be a list of layer names or None, but got {layers!r}.")
        if not isinstance(reset_each_run, bool):
            raise TypeError(f"Expected argument `reset_each_run` to be a bool, but got {reset_each_run!r}.")
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"Expected argument `path` to be a str or None, but got {path!r}.")
        self.layers = None if layers is None else list(layers)
        self.reset_each_run = reset_each_run
        self.path = None if path is None else str(path)
        self.initial_batches = check_int("initial_batches", initial_batches, 0)
        self.every_n_batches = check_int("every_n_batches", every_n_batches, 1)
        self.statistics = PatternStatistics()
        self.patterns: Patterns = {}
        self._handles: list[RemovableHandle] = []
        self._active = False  # recording the training step's forward passes
        self._initial = False  # recording the initial estimate (which runs inside observe)
        self._budget_skipped = 0  # batches not recorded because the estimator was over budget
        self._target = self.statistics
        self._modules: dict[str, nn.Module] = {}
        self._batchnorms: dict[str, _BatchNorm] = {}

    # -- identity and state --------------------------------------------------------------------
    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "layers": self.layers}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["statistics"] = self.statistics.state_dict()
        state["patterns"] = {n: {k: v.detach().cpu() for k, v in p.items()} for n, p in self.patterns.items()}
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.statistics.load_state_dict(state_dict.get("statistics", {}))
        self.patterns = {n: dict(p) for n, p in state_dict.get("patterns", {}).items()}

    # -- lifecycle -----------------------------------------------------------------------------
    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = pattern_layers(pl_module, self.layers)
        if not found:
            raise ValueError(f"{type(self).__name__}: the model has no Linear/Conv layer to estimate patterns for.")

    @override
    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self._modules = pattern_layers(pl_module, self.layers)
        self._batchnorms = merged_batchnorms(pl_module, self._modules)
        for name, module in self._modules.items():
            self._handles.append(register_own_forward_hook(module, self._hook(name)))
        if self.patterns:  # resumed from a checkpoint: the explainers can use them right away
            set_patterns(pl_module, self.patterns)
        elif self.initial_batches:
            self._initial_estimate(trainer, pl_module)

    def _initial_estimate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats = PatternStatistics()
        self._target, self._initial = stats, True
        try:
            with observe(pl_module), torch.no_grad():
                for count, (_, batch) in enumerate(self.iter_dataset(trainer, pl_module, dataset=self.dataset)):
                    if count >= self.initial_batches:
                        break
                    inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
                    if not isinstance(inputs, Tensor):
                        self.warn("cannot tell the inputs of a training batch; patterns appear after the first run.")
                        return
                    pl_module(inputs)
        except ValueError as err:  # no map-style training set to stream
            self.warn(f"no initial patterns ({err}); they appear after the first run.")
            return
        finally:
            self._target, self._initial = self.statistics, False
        if stats.sums:
            set_patterns(pl_module, stats.patterns(self._modules, batchnorms=self._batchnorms))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not (self._initial or (self._active and not observing())):
                return
            if args and isinstance(args[0], Tensor) and isinstance(output, Tensor):
                with self.timed():
                    x, y = args[0], output
                    if x.dtype in (torch.float16, torch.bfloat16):
                        x, y = x.float(), y.float()
                    self._target.update(name, module, x, y, self._batchnorms.get(name))

        return hook

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._active = self._initial = False

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._active = False
        if self._skip(trainer) or batch_idx % self.every_n_batches:
            return
        if self._budget_exceeded():  # this rank's own view: no collective per batch
            self._budget_skipped += 1
            return
        self._active = True

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if pl_module.automatic_optimization:  # the training step's forward is complete
            self._active = False

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._active = False
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        super().on_fit_end(trainer, pl_module)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        super().on_exception(trainer, pl_module, exception)

    # -- one run -------------------------------------------------------------------------------
    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats = self.statistics
        if trainer.world_size > 1:
            stats = PatternStatistics()
            stats.load_state_dict(self.statistics.state_dict())
            device = pl_module.device
            stats.all_reduce(lambda t: trainer.strategy.reduce(t.to(device), reduce_op="sum").cpu())
        if not stats.sums:
            return
        self.patterns = stats.patterns(self._modules, batchnorms=self._batchnorms)
        set_patterns(pl_module, self.patterns)
        scalars: dict[str, float] = {}
        total = 0.0
        for name, sums in stats.sums.items():
            active, inactive = float(sums["n_plus"].sum()), float(sums["n_minus"].sum())
            scalars[f"xai/{self.log_key}/{name}/active_fraction"] = active / max(active + inactive, 1.0)
            total += active + inactive
        scalars[f"xai/{self.log_key}/samples"] = total
        if self._budget_skipped:
            scalars[f"xai/{self.log_key}/batches_skipped_over_budget"] = float(self._budget_skipped)
        if self.reset_each_run:
            self.statistics.reset()
        if self.path is not None and trainer.is_global_zero:
            torch.save({n: {k: v.detach().cpu() for k, v in p.items()} for n, p in self.patterns.items()}, self.path)

        def render(sinks: list[Sink], info: RunInfo) -> None:
            for sink in sinks:
                sink.log_scalars(scalars, info.step)

        self.publish(trainer, render)
