"""``TracInStepsMonitor``: the idealised TracIn of Pruthi et al. (2020, section 3.1), accumulated at
the training steps themselves, with no second pass over the data."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_xai._validation import check_choice, check_int
from lightning_xai.attribution.base import OutputType, observe
from lightning_xai.callbacks import _tracin
from lightning_xai.callbacks.base import ProbeMonitor, RunInfo, _batch_size, _first_loader
from lightning_xai.data.probe import Probe
from lightning_xai.errors import LightningXAIError
from lightning_xai.influence import LAST_LINEAR, GradientLayers, check_gradient_layers, resolve_gradient_layers
from lightning_xai.influence._common import LossType, PerExampleGradients, model_state, resolve_loss
from lightning_xai.influence.ghost import GhostGradients, countable_layers
from lightning_xai.sinks import Sink

__all__ = ["TracInStepsMonitor"]


class _IndexRecorder:
    """Stands in for a DataLoader's ``batch_sampler``: yields exactly what the original yields (same
    order, same RNG draws) and queues each batch's dataset indices. Every other attribute
    (``sampler``, ``set_epoch``, ...) is the original's."""

    def __init__(self, batch_sampler: Any) -> None:
        self.original = batch_sampler
        self.queue: deque[Tensor] = deque()

    def __iter__(self) -> Iterator[Any]:
        self.queue.clear()  # a new pass: batches prefetched by an abandoned iterator are void
        for batch in self.original:
            self.queue.append(torch.as_tensor(list(batch), dtype=torch.long))
            yield batch

    def __len__(self) -> int:
        return len(self.original)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["original"], name)


class TracInStepsMonitor(ProbeMonitor):
    """TracIn at every training step, from the training backward itself.

    Accumulates, while the model trains, every training example's self-influence

        ``self_influence[i] = sum over the steps t whose batch holds i of lr_t * |g_t(i)|^2``

    where ``g_t(i)`` is example i's own loss gradient at the weights step ``t`` used (for a
    mean-reduced loss, the batch size times its share of the batch gradient; with gradient
    accumulation, times ``accumulate_grad_batches`` too) and ``lr_t`` the learning rate of the
    param group holding each parameter at that step. The per-example norms come from each counted
    layer's input and output gradient during the ordinary backward (see
    :mod:`lightning_xai.influence.ghost`: Linear, Conv1d/2d, BatchNorm affine, Embedding); no
    per-example gradient of the model is formed and nothing is re-read. A trainable parameter of
    any other layer type raises at ``setup`` naming the layer (``on_unsupported="warn"`` leaves it
    out instead).

    Example indices come from the training DataLoader's batch sampler, observed (not replaced in
    behaviour) from ``on_train_start``: shuffled or not, with workers, and with the
    ``DistributedSampler`` Lightning adds under DDP; training batches, order and RNG stream are
    unchanged, so training is bitwise identical with and without the monitor. A DataLoader without
    a batch sampler (``batch_size=None``) or over an ``IterableDataset`` raises with the one-line
    change to make. Under DDP each rank adds its own examples; the sums are all-reduced at every
    epoch end (every rank then holds the totals, rank zero logs them).

    Optimizers: the step ``w -= lr * g`` is plain SGD's; with any other optimizer (Adam, or SGD
    with momentum) a warning says the first-order approximation behind TracIn does not hold. With
    SGD momentum ``mu`` (no dampening) the group's ``lr`` is used as ``lr_t``; a gradient then moves
    the weights by ``lr / (1 - mu)`` in total over the following steps, a common factor that
    leaves rankings unchanged while ``lr`` is constant.

    Probes (``probe_every_n_train_steps``): every n-th step, the per-example gradients of the probe
    images (class-balanced from the validation data, in eval mode, at the step's weights) are
    formed once (memory ``num_samples x`` the counted parameters), and the step adds
    ``lr_t * <g_t(i), g_t(probe)>`` for every example of its batch to :attr:`probe_scores`
    (proponents: highest, opponents: lowest). Cost on such a step: one per-example-gradient pass
    over the probe set (``torch.func``) plus about ``num_samples`` inner products per example and
    layer (see :class:`~lightning_xai.influence.ghost.GhostGradients`); with ``max_overhead`` these
    probe steps are skipped while over budget. Self-influence is always accumulated (skipping steps
    would bias the sums); its cost, the hooks inside the backward and the accumulation after it,
    counts against the budget like everything else the monitor does on the training thread.

    Logged at the end of every ``every_n_epochs``-th epoch, on rank zero: ``xai/tracin/self_influence_top``
    (the ``num_top_examples`` highest self-influence training images: mislabel candidates),
    ``xai/tracin/self_influence`` (histogram), ``xai/tracin/steps`` and, with probes,
    ``xai/tracin/proponents/<i>``.

    Args:
        every_n_epochs: Log every n epochs (accumulation happens at every step).
        probe_every_n_train_steps: Probe proponents/opponents every n optimizer steps (``None``: no probes).
        gradient_layers: Whose parameter gradients count: ``"last_linear"`` (default: the last
            ``nn.Linear`` with trainable parameters: a few percent of a step), ``None`` (every trainable
            parameter: see the cost above) or module names.
        num_samples: Probe images.
        num_top_examples: Highest self-influence examples shown.
        loss: The probes' per-example loss (name or callable; it should be the training loss).
        loss_reduction: ``"mean"`` (the training loss averages over the batch) or ``"sum"``.
        on_unsupported: ``"raise"`` or ``"warn"`` for a trainable parameter ghost norms cannot count.
        class_names: Names for class indices in captions (default: the datamodule's ``classes``).
        seed: Seed of the probe selection.
        probe: Optional user probe ``(inputs, targets)``.
        output: How to pick scores from a tuple/dict model output (probes only).
        max_overhead: Time budget as a fraction of training time (probe steps and logging).
        synchronous_logging: Render on the training thread (see :class:`~lightning_xai.callbacks.base.MonitorBase`).

    Examples:
        >>> monitor = TracInStepsMonitor(num_top_examples=16)
        >>> # pl.Trainer(callbacks=[monitor]).fit(model, dm); monitor.self_influence.topk(16)
    """

    def __init__(
        self,
        *,
        every_n_epochs: int = 1,
        probe_every_n_train_steps: Optional[int] = None,
        gradient_layers: GradientLayers = LAST_LINEAR,
        num_samples: int = 8,
        num_top_examples: int = 16,
        loss: LossType = "cross_entropy",
        loss_reduction: str = "mean",
        on_unsupported: str = "raise",
        class_names: Optional[list[str]] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        super().__init__(
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=None,
            seed=seed,
            probe=probe,
            output=output,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        self.probe_every_n_train_steps = check_int(
            "probe_every_n_train_steps", probe_every_n_train_steps, 1, allow_none=True
        )
        self.gradient_layers = check_gradient_layers(gradient_layers)
        self.layers: Optional[list[str]] = None if isinstance(self.gradient_layers, str) else self.gradient_layers
        """The module names whose parameters count, resolved at ``setup`` (``None``: every trainable parameter)."""
        self.num_top_examples = check_int("num_top_examples", num_top_examples, 1)
        self.loss_name, self.loss_fn = resolve_loss(loss)
        self.loss_reduction = check_choice("loss_reduction", loss_reduction, ("mean", "sum"))
        self.on_unsupported = check_choice("on_unsupported", on_unsupported, ("raise", "warn"))
        self.class_names = list(class_names) if class_names is not None else None
        self.self_influence: Optional[Tensor] = None
        """``[N]`` accumulated self-influence of every training example (float64, CPU; totals over
        ranks as of the last epoch end)."""
        self.probe_scores: Optional[Tensor] = None
        """``[num_samples, N]`` accumulated ``lr_t <g_t(i), g_t(probe)>`` (float64, CPU)."""
        self.steps = 0
        """Optimizer steps accumulated (on this rank)."""
        self._ghost: Optional[GhostGradients] = None
        self._recorder: Optional[_IndexRecorder] = None
        self._installed: list[tuple[DataLoader, _IndexRecorder]] = []
        self._patched: Optional[tuple[Any, Any]] = None
        self._problem: Optional[str] = None
        self._loader: Optional[DataLoader] = None
        self._indices: Optional[Tensor] = None
        self._local_self: Optional[Tensor] = None
        self._local_scores: Optional[Tensor] = None
        self._lr: dict[int, dict] = {}
        self._probe_step = False

    @property
    @override
    def log_key(self) -> str:
        return "tracin"

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "mode": "steps", "layers": self.gradient_layers}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(self_influence=self.self_influence, probe_scores=self.probe_scores, steps=self.steps)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.self_influence = state_dict.get("self_influence")
        self.probe_scores = state_dict.get("probe_scores")
        self.steps = int(state_dict.get("steps", 0))

    # -- setup ---------------------------------------------------------------------------------
    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.automatic_optimization:
            raise ValueError("TracInStepsMonitor supports automatic optimization only (automatic_optimization=True).")
        self.layers = resolve_gradient_layers(pl_module, self.gradient_layers, type(self).__name__)
        self._counted = countable_layers(pl_module, self.layers, self.on_unsupported, type(self).__name__)
        if self.probe_every_n_train_steps is not None and self.probe is not None and self.probe.targets is None:
            raise ValueError(
                "TracInStepsMonitor needs labelled probe images (the loss needs targets); the probe has none."
            )
        if self.class_names is None:
            names = getattr(getattr(trainer, "datamodule", None), "classes", None)
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                self.class_names = list(names)

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing to try before training: the loader is checked at train start, the layers at setup."""

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._watch_loader(trainer)
        self._read_optimizers(trainer)
        if self._ghost is None:
            self._ghost = GhostGradients(pl_module, self._counted, weight=self._weight)
        self._ghost.attach()

    def _read_optimizers(self, trainer: pl.Trainer) -> None:
        self._lr = {}
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    self._lr[id(p)] = group  # read live: a scheduler changes group["lr"] between steps
            plain = type(optimizer) is torch.optim.SGD and all(
                g.get("momentum", 0) == 0 and not g.get("nesterov", False) for g in optimizer.param_groups
            )
            if not plain:
                self.warn(
                    f"the optimizer is {type(optimizer).__name__}"
                    + (" with momentum" if type(optimizer) is torch.optim.SGD else "")
                    + ", not plain SGD: TracIn's first-order step approximation (w -= lr * g) does not hold; "
                    "scores use the param group's lr as lr_t."
                )
        missing = [
            n
            for n, m in self._counted.items()
            for p in m.parameters(recurse=False)
            if p.requires_grad and id(p) not in self._lr
        ]
        if missing:
            raise ValueError(f"TracInStepsMonitor: no optimizer param group holds the parameters of layers {missing}.")

    def _weight(self, p: nn.Parameter) -> float:
        group = self._lr.get(id(p))
        return float(group["lr"]) if group is not None else 0.0

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._observe_loading(trainer)

    def _observe_loading(self, trainer: pl.Trainer) -> None:
        """Install the index recorder on the training DataLoader as Lightning builds it.

        The fit loop creates the first epoch's iterator right after building the loader, before
        any callback hook, so the recorder is installed from within: for the duration of
        ``fit_loop.setup_data`` the strategy's ``process_dataloader`` (the last step of Lightning's
        loader processing, after the ``DistributedSampler`` is added) is wrapped on this trainer
        instance only. Both are restored at teardown.
        """
        loop, strategy = trainer.fit_loop, trainer.strategy
        if "setup_data" in vars(loop):
            return
        original_setup, original_process = loop.setup_data, strategy.process_dataloader
        capturing = [False]

        def setup_data() -> None:
            capturing[0] = True
            try:
                original_setup()
            finally:
                capturing[0] = False

        def process_dataloader(dataloader: object) -> object:
            dataloader = original_process(dataloader)
            if capturing[0] and isinstance(dataloader, DataLoader):
                self._install(dataloader)
            return dataloader

        loop.setup_data = setup_data  # type: ignore[method-assign]
        strategy.process_dataloader = process_dataloader  # type: ignore[method-assign]
        self._patched = (loop, strategy)

    def _install(self, loader: DataLoader) -> None:
        dataset = loader.dataset
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__") or loader.batch_sampler is None:
            self._problem = (
                "TracInStepsMonitor needs the indices of each training batch, which only a map-style dataset read "
                "through a batch sampler gives: use `DataLoader(dataset, batch_size=..., shuffle=...)` with a "
                f"torch.utils.data.Dataset (got {type(dataset).__name__}, batch_size={loader.batch_size})."
            )
            return
        if getattr(loader, "in_order", True) is False:
            self._problem = "TracInStepsMonitor: DataLoader(in_order=False) reorders batches; leave in_order=True."
            return
        if isinstance(loader.batch_sampler, _IndexRecorder):
            return
        recorder = _IndexRecorder(loader.batch_sampler)
        object.__setattr__(loader, "batch_sampler", recorder)  # DataLoader forbids setting it after init
        self._installed.append((loader, recorder))

    def _watch_loader(self, trainer: pl.Trainer) -> None:
        """Check that the training loader is one the recorder watches, and size the sums."""
        loader = _first_loader(trainer.train_dataloader)
        if self._problem is not None:
            raise ValueError(self._problem)
        found = [r for dl, r in self._installed if dl is loader]
        if loader is None or not found:
            raise ValueError(
                "TracInStepsMonitor: could not observe the training DataLoader's batch sampler (is the fit "
                "loop's data loading customised?); it needs one torch DataLoader over a map-style dataset."
            )
        self._recorder, self._loader = found[0], loader
        n = len(loader.dataset)  # type: ignore[arg-type]
        if self.self_influence is None or self.self_influence.numel() != n:
            self.self_influence = torch.zeros(n, dtype=torch.float64)
            self.probe_scores = torch.zeros(len(self.probe) if self.probe is not None else 0, n, dtype=torch.float64)

    def _unwatch(self) -> None:
        for loader, recorder in self._installed:
            if loader.batch_sampler is recorder:
                object.__setattr__(loader, "batch_sampler", recorder.original)
        self._installed.clear()
        if self._patched is not None:
            loop, strategy = self._patched
            vars(loop).pop("setup_data", None)
            vars(strategy).pop("process_dataloader", None)
            self._patched = None
        self._recorder = None

    # -- every step ----------------------------------------------------------------------------
    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._watch_loader(trainer)  # a reloaded DataLoader (reload_dataloaders_every_n_epochs) is watched anew

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        assert self._recorder is not None and self._ghost is not None
        if not self._recorder.queue:
            raise LightningXAIError(
                "TracInStepsMonitor: a training batch arrived that its batch sampler did not announce; the "
                "DataLoader is not read through its batch sampler (a custom iterator?)."
            )
        self._indices = self._recorder.queue.popleft()
        size = _batch_size(batch)
        if size != len(self._indices):
            raise LightningXAIError(
                f"TracInStepsMonitor: batch {batch_idx} holds {size} examples but its sampler gave "
                f"{len(self._indices)} indices; the dataset or collate_fn changes the batch size."
            )
        self._ghost.set_probe(None)
        self._probe_step = False
        accumulate = trainer.accumulate_grad_batches
        step = trainer.global_step  # the optimizer step this batch contributes to
        if (
            self.probe_every_n_train_steps is not None
            and self.probe is not None
            and step % self.probe_every_n_train_steps == 0
            and not self._over_budget(trainer)
        ):
            t0 = time.perf_counter()
            self._ghost.set_probe(self._probe_gradients(pl_module))
            self._probe_step = True
            self._spent += time.perf_counter() - t0
        scale = float(size * accumulate) if self.loss_reduction == "mean" else float(accumulate)
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None and scaler.is_enabled():
            scale /= float(scaler.get_scale())
        self._ghost.start(scale=scale)

    def _probe_gradients(self, pl_module: pl.LightningModule) -> dict[str, dict[str, Tensor]]:
        """Each probe image's loss gradient of every counted parameter at the current weights, in
        eval mode, with the model, its ``.grad``, modes, BN statistics and RNG left as they were."""
        assert self.probe is not None and self.probe.targets is not None
        names = {
            f"{layer}.{p}" if layer else p: (layer, p)
            for layer, module in self._counted.items()
            for p, param in module.named_parameters(recurse=False)
            if param.requires_grad
        }
        own = {n: p for n, p in pl_module.named_parameters()}
        ordered = [n for n in own if n in names]
        with observe(pl_module, output=self.output) as ctx:
            grads = PerExampleGradients(pl_module, ordered, self.loss_fn, ctx)
            state = model_state(pl_module)
            flat = grads._dense(state, self.probe.inputs, self.probe.targets.to(ctx.device))
        out: dict[str, dict[str, Tensor]] = {}
        start = 0
        for n in ordered:
            size = own[n].numel()
            layer, p = names[n]
            out.setdefault(layer, {})[p] = flat[:, start : start + size].reshape(-1, *own[n].shape).detach()
            start += size
        return out

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ghost = self._ghost
        if ghost is None or not ghost.active or self._indices is None:
            return
        self._spent += ghost.seconds  # the norms computed inside this backward count against max_overhead
        ghost.seconds = 0.0
        with self.timed():
            self._accumulate(ghost)

    def _accumulate(self, ghost: GhostGradients) -> None:
        """Add this step's norms (and probe inner products) to the local sums."""
        norms = ghost.finish()
        n = self._indices.numel()
        if norms.numel() == 0:
            return
        if norms.shape != (n,):
            raise LightningXAIError(
                f"TracInStepsMonitor: the counted layers saw a batch of {norms.shape[0]} examples, the sampler {n}."
            )
        if self._local_self is None:
            assert self.self_influence is not None and self.probe_scores is not None
            self._local_self = torch.zeros(self.self_influence.shape, dtype=torch.float64, device=norms.device)
            self._local_scores = torch.zeros(self.probe_scores.shape, dtype=torch.float64, device=norms.device)
        idx = self._indices.to(norms.device)
        self._local_self.index_add_(0, idx, norms.double())
        if ghost.dots is not None and self._local_scores is not None:
            self._local_scores.index_add_(1, idx, ghost.dots.double().T)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._ghost is not None and self._ghost.active:
            self._ghost.finish()  # no backward ran (training_step returned None): nothing to add
        self._indices = None
        self.steps = int(trainer.global_step)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    # -- reduction and logging -----------------------------------------------------------------
    def _reduce(self, trainer: pl.Trainer) -> None:
        """Add every rank's accumulation since the last call to the totals (a collective)."""
        if self.self_influence is None:
            return
        device = trainer.strategy.root_device
        local = (
            self._local_self
            if self._local_self is not None
            else torch.zeros(self.self_influence.shape, dtype=torch.float64, device=device)
        )
        scores = self._local_scores
        if scores is None:
            assert self.probe_scores is not None
            scores = torch.zeros(self.probe_scores.shape, dtype=torch.float64, device=device)
        if trainer.world_size > 1:
            packed = torch.cat([local.to(device), scores.to(device).flatten()])
            packed = trainer.strategy.reduce(packed, reduce_op="sum")
            local, scores = packed[: local.numel()], packed[local.numel() :].reshape(scores.shape)
        self.self_influence += local.cpu()
        assert self.probe_scores is not None
        self.probe_scores += scores.cpu()
        self._local_self, self._local_scores = None, None

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._reduce(trainer)  # before ModelCheckpoint saves at validation end
        super().on_validation_epoch_end(trainer, pl_module)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reduce(trainer)
        super().on_train_epoch_end(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reduce(trainer)
        self._release()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._release()
        super().on_exception(trainer, pl_module, exception)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._release()

    def _release(self) -> None:
        if self._ghost is not None:
            self._ghost.detach()
        self._unwatch()

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        """Not used: results accumulate at every step (see :meth:`run`)."""
        return {}

    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.self_influence is None:
            return
        results = self._picture_data(trainer)
        probe = self.probe.to("cpu") if self.probe is not None else None
        self.publish(trainer, lambda sinks, info: self.render(sinks, info, probe, results))  # type: ignore[arg-type]

    def _examples(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        loader = self._loader
        assert loader is not None
        return _tracin.read_examples(loader.dataset, loader, indices)

    def _picture_data(self, trainer: pl.Trainer) -> dict[str, Tensor]:
        assert self.self_influence is not None and self.probe_scores is not None
        top = self.self_influence.float().topk(min(self.num_top_examples, self.self_influence.numel()))
        wanted = [top.indices]
        results: dict[str, Tensor] = {"top_indices": top.indices, "top_scores": top.values}
        scores = self.probe_scores
        k = min(self.num_top_examples, _tracin.MAX_INFLUENCERS, scores.shape[1])
        with_probes = self.probe_every_n_train_steps is not None and scores.numel() > 0 and bool(scores.abs().sum() > 0)
        if with_probes:
            pro, opp = scores.float().topk(k, dim=1), scores.float().topk(k, dim=1, largest=False)
            results.update(
                pro_indices=pro.indices, pro_scores=pro.values, opp_indices=opp.indices, opp_scores=opp.values
            )
            wanted += [pro.indices.flatten(), opp.indices.flatten()]
        images, labels = self._examples(torch.cat(wanted))
        if images.ndim != 4:  # not images: scores, histogram and table only
            return {
                **results,
                "top_labels": labels[: top.indices.numel()],
                "self_influence": self.self_influence.float().clone(),
                "steps": torch.tensor(self.steps),
            }
        t = top.indices.numel()
        results.update(top_images=images[:t], top_labels=labels[:t])
        if with_probes:
            results.update(_tracin.influencer_images(images, labels, t, (scores.shape[0], k)))
        results.update(self_influence=self.self_influence.float().clone(), steps=torch.tensor(self.steps))
        return results

    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        scalars = {"xai/tracin/steps": float(results["steps"])}
        _tracin.render(
            sinks, info, probe, results, self.class_names, title_suffix=", at the training steps", scalars=scalars
        )
