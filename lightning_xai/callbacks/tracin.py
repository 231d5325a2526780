"""``TracInMonitor``: TracIn influence accumulated online while the model trains."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import OutputType
from lightning_xai.callbacks import _tracin
from lightning_xai.callbacks.base import ProbeMonitor, RunInfo, _training_loader
from lightning_xai.data.probe import Probe, split_batch
from lightning_xai.errors import LightningXAIError
from lightning_xai.influence import (
    LAST_LINEAR,
    GradientLayers,
    LossType,
    TracIn,
    check_gradient_layers,
    resolve_gradient_layers,
    selected_parameters,
)
from lightning_xai.influence.checkpoints import save_tracin_checkpoint
from lightning_xai.sinks import Sink

__all__ = ["TracInMonitor"]


def _rankable(self_influence: Tensor, scores: Tensor) -> Tensor:
    """``[N]`` mask of the examples with a finite self-influence and finite scores for every probe."""
    return torch.isfinite(self_influence) & torch.isfinite(scores).all(0)


_CHECKPOINT_ONLY = frozenset(
    {"projection_dim", "save_checkpoints", "checkpoint_dir", "batch_size", "dataset", "every_n_train_steps"}
)
"""Arguments of the checkpoint mode that the steps mode has no use for."""


class TracInMonitor(ProbeMonitor):
    """TracIn (Pruthi et al. 2020) during training: every checkpoint epoch adds
    ``lr * <grad L(z), grad L(z')>`` at the current weights to running sums, so no checkpoint is
    saved or reloaded.

    At each scheduled run (a "checkpoint") it reads the learning rate from the optimizer (the
    param group holding the first selected parameter; :attr:`lr_source` says which, and it is
    logged at fit start), streams the training examples the training sampler yields (this rank's
    share under DDP, in a fixed order, training's RNG and sampler untouched, through
    :meth:`~lightning_xai.callbacks.base.MonitorBase.iter_dataset`; from ``dataset`` when given)
    and accumulates

    * every training example's self-influence ``sum_c lr_c |grad L(w_c, z)|^2`` (high: hard or
      mislabelled examples; ``NaN`` for every index the sampler never yielded, e.g. a validation
      split a ``SubsetRandomSampler`` carves out), and
    * every probe image's TracIn score against every training example (kept as a
      ``num_samples x N`` matrix), from which its proponents (highest scores) and opponents
      (lowest) are read.

    It logs, on rank zero and in the background: ``xai/tracin/self_influence_top`` (a grid of the
    ``num_top_examples`` highest self-influence training images with index, label and score: the mislabel
    candidates), ``xai/tracin/proponents/<i>`` (probe image *i* with its proponents and opponents,
    ``min(num_top_examples, 8)`` each), the ``xai/tracin/self_influence`` histogram (finite scores), scalars
    ``xai/tracin/learning_rate`` and ``xai/tracin/checkpoints``, and a table
    ``xai/tracin/top_self_influence`` (index, label, score, image).

    Cost per run: one pass of per-example gradients over the training set (``vmap``; with
    the default ``gradient_layers``, one forward pass). With ``save_checkpoints=True`` each run
    also writes a light checkpoint (weights + learning rate, see
    :mod:`lightning_xai.influence.checkpoints`) that :class:`~lightning_xai.influence.TracIn` and
    captum's ``TracInCP`` (``checkpoints_load_func=load_tracin_checkpoint``) read.

    The accumulated sums are part of the callback's ``state_dict``, so a resumed fit continues
    them. Under DDP every rank computes its share of the training set; the sums (and a count of
    the ranks that streamed each index, which keeps ``NaN`` where none did) are combined with one
    ``all_reduce``, so every rank holds the full result and rank zero logs it.

    Rankings and pictures skip indices never streamed; a streamed example whose score is not
    finite (a NaN image, say) is left out of them too, with a warning naming its dataset index.
    Pictures are read from ``dataset`` when given (the view that was scored, when it has no
    random augmentation), else from the training dataset (then one random view of the example).

    Two modes: ``mode="checkpoints"`` (this class: a pass over the training set at each scheduled
    checkpoint) and ``mode="steps"``, which returns a
    :class:`~lightning_xai.callbacks.tracin_steps.TracInStepsMonitor`: the paper's idealised TracIn
    accumulated at every training step from the training backward itself, no second pass (it takes
    the same keywords, less those of the checkpoint pass).

    Args:
        mode: ``"checkpoints"`` or ``"steps"`` (see above).
        every_n_epochs: A checkpoint every n epochs.
        every_n_train_steps: A checkpoint every n optimizer steps instead.
        gradient_layers: Whose parameter gradients count: ``"last_linear"`` (default: the last
            ``nn.Linear`` with trainable parameters, one forward pass per batch, the cheap choice of
            TracInCP-fast), ``None`` (every trainable parameter: one ``vmap`` per-example-gradient
            pass, memory ``batch_size x`` the parameter count) or module names.
        num_samples: Probe images (class-balanced, from the validation data) whose proponents
            and opponents are tracked.
        num_top_examples: Highest self-influence examples shown and tabled.
        projection_dim: Random projection of the gradients (see :class:`~lightning_xai.influence.TracIn`).
        save_checkpoints: Also write light checkpoints to ``checkpoint_dir``.
        checkpoint_dir: Where (default ``<log_dir>/tracin_checkpoints``).
        loss: Loss name or per-example callable (see :class:`~lightning_xai.influence.TracIn`).
        batch_size: Examples per per-example-gradient batch and per read of the training set.
        class_names: Names for the class indices in captions (default: the datamodule's ``classes``).
        seed: Seed of the probe selection.
        probe: Optional user probe ``(inputs, targets)``.
        output: How to pick the ``[B, C]`` scores the loss reads when the model returns a tuple,
            dict or dataclass (see :func:`~lightning_xai.attribution.base.select_output`).
        max_overhead: Time budget as a fraction of training time (see :class:`~lightning_xai.callbacks.base.MonitorBase`).
        synchronous_logging: Render on the training thread (debugging).
        dataset: Optional view of the training examples to score and draw, with the training
            dataset's length and indexing, typically without random augmentation (a map-style
            dataset or a DataLoader whose ``collate_fn`` is used); which indices are read still
            comes from the training sampler.

    Examples:
        >>> monitor = TracInMonitor(every_n_epochs=2, num_top_examples=16, save_checkpoints=True)
        >>> # pl.Trainer(callbacks=[monitor]).fit(model, datamodule); monitor.self_influence
    """

    def __new__(cls, *args: Any, mode: str = "checkpoints", **kwargs: Any) -> Any:
        if mode == "steps" and cls is TracInMonitor:
            from lightning_xai.callbacks.tracin_steps import TracInStepsMonitor

            unused = sorted(set(kwargs) & _CHECKPOINT_ONLY)
            if unused or args:
                raise TypeError(
                    f"TracInMonitor(mode='steps') accumulates at the training steps and takes no {unused or 'positional'} "
                    "argument(s): they belong to mode='checkpoints'."
                )
            return TracInStepsMonitor(**kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        *,
        mode: str = "checkpoints",
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        gradient_layers: GradientLayers = LAST_LINEAR,
        num_samples: int = 8,
        num_top_examples: int = 16,
        projection_dim: Optional[int] = None,
        save_checkpoints: bool = False,
        checkpoint_dir: Optional[str] = None,
        loss: LossType = "cross_entropy",
        batch_size: int = 64,
        class_names: Optional[list[str]] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        dataset: Optional[Any] = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        if mode != "checkpoints":  # __new__ built a TracInStepsMonitor for mode="steps"; anything else is an error
            raise ValueError(f"Expected argument `mode` to be 'checkpoints' or 'steps', but got {mode!r}.")
        super().__init__(
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            seed=seed,
            probe=probe,
            output=output,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        self.mode = mode
        self.gradient_layers = check_gradient_layers(gradient_layers)
        self.loss = loss
        self.tracin = TracIn(
            loss=loss,
            layers=None if isinstance(self.gradient_layers, str) else self.gradient_layers,
            projection_dim=projection_dim,
            batch_size=batch_size,
            output=output,
        )
        self.layers = self.tracin.layers
        """The module names whose parameters count, resolved at ``setup`` (``None``: every trainable parameter)."""
        self.projection_dim = projection_dim
        self.num_top_examples = check_int("num_top_examples", num_top_examples, 1)
        self.batch_size = batch_size
        self.save_checkpoints = bool(save_checkpoints)
        self.checkpoint_dir = checkpoint_dir
        self.class_names = list(class_names) if class_names is not None else None
        self.dataset = dataset
        self.self_influence: Optional[Tensor] = None
        """``[N]`` accumulated self-influence of every training example (float64, CPU; ``NaN`` where
        never streamed)."""
        self.probe_scores: Optional[Tensor] = None
        """``[num_samples, N]`` accumulated TracIn scores of the probe images (float64, CPU; ``NaN``
        columns where never streamed)."""
        self.checkpoints: list[dict[str, Any]] = []
        """One record per checkpoint added: epoch, step, learning rate, param group, file (if saved)."""
        self.lr_source: Optional[str] = None
        self._dir: Optional[Path] = None

    @property
    @override
    def log_key(self) -> str:
        return "tracin"

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "layers": self.gradient_layers, "projection_dim": self.projection_dim}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            self_influence=self.self_influence, probe_scores=self.probe_scores, checkpoints=list(self.checkpoints)
        )
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.self_influence = state_dict.get("self_influence")
        self.probe_scores = state_dict.get("probe_scores")
        self.checkpoints = list(state_dict.get("checkpoints", []))

    # -- setup ---------------------------------------------------------------------------------
    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.layers = resolve_gradient_layers(pl_module, self.gradient_layers, type(self).__name__)
        self.tracin.layers = self.layers
        selected_parameters(pl_module, self.layers, type(self).__name__)  # unknown layer: ValueError now
        if self.probe is not None and self.probe.targets is None:
            raise ValueError("TracInMonitor needs labelled probe images (the loss needs targets); the probe has none.")
        if self.class_names is None:
            names = getattr(getattr(trainer, "datamodule", None), "classes", None)
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                self.class_names = list(names)

    @override
    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().prepare(trainer, pl_module)
        if self.save_checkpoints:
            # every rank asks (trainer.log_dir is a collective under DDP); only rank zero writes
            root = self.checkpoint_dir or str(Path(trainer.log_dir or trainer.default_root_dir) / "tracin_checkpoints")
            self._dir = Path(root)
        lr, source = self._learning_rate(trainer, pl_module)
        self.lr_source = source
        rank_zero_info(f"TracInMonitor: reads the learning rate from {source} (now {lr:g}).")

    def _learning_rate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, str]:
        names = selected_parameters(pl_module, self.layers, type(self).__name__)
        params = dict(pl_module.named_parameters())
        wanted = {id(params[n]) for n in names}
        found: list[tuple[int, int, float]] = []
        for o, optimizer in enumerate(trainer.optimizers):
            for g, group in enumerate(optimizer.param_groups):
                if any(id(p) in wanted for p in group["params"]):
                    found.append((o, g, float(group["lr"])))
        if not found:
            raise ValueError(
                "TracInMonitor: no optimizer param group holds the selected parameters, so there is no learning "
                "rate to weight the checkpoints with."
            )
        o, g, lr = found[0]
        if len({f[2] for f in found}) > 1:
            self.warn(
                f"the selected parameters sit in param groups with different learning rates "
                f"{[f[2] for f in found]}; using optimizer {o}'s param group {g} (lr={lr:g})."
            )
        return lr, f"optimizer {o}, param group {g}"

    # -- data ----------------------------------------------------------------------------------
    def _dataset(self, trainer: pl.Trainer) -> tuple[Any, Optional[DataLoader]]:
        """The dataset scored and drawn (``dataset`` when given) and the loader whose ``collate_fn`` reads it."""
        if isinstance(self.dataset, DataLoader):
            return self.dataset.dataset, self.dataset
        loader = _training_loader(trainer)
        if self.dataset is not None:
            return self.dataset, loader
        return getattr(loader, "dataset", None), loader

    def _triples(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, limit: Optional[int] = None
    ) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        read = 0
        for indices, batch in self.iter_dataset(trainer, pl_module, self.dataset, batch_size=self.batch_size):
            x, y, _ = split_batch(batch)
            if y is None:
                raise ValueError("TracInMonitor: the training batches hold no targets; TracIn needs (x, y).")
            if limit is not None:
                indices, x, y = indices[: limit - read], x[: limit - read], y[: limit - read]
            yield indices, x, torch.as_tensor(y)
            read += len(indices)
            if limit is not None and read >= limit:
                return

    def _examples(self, trainer: pl.Trainer, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Training images and labels at ``indices`` (CPU) from the scored view, read with the RNG untouched."""
        dataset, loader = self._dataset(trainer)
        return _tracin.read_examples(dataset, loader, indices)

    # -- computation ---------------------------------------------------------------------------
    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        """One checkpoint over this rank's share of the training set, summed over ranks: ``{"self_influence":
        [N], "scores": [len(probe), N]}`` contributions at the current weights (not per-probe rows:
        this monitor runs its own :meth:`run`)."""
        lr, _ = self._learning_rate(trainer, pl_module)
        return self._contributions(trainer, pl_module, probe, lr, limit=None)

    def _contributions(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe, lr: float, limit: Optional[int]
    ) -> dict[str, Tensor]:
        """This checkpoint's ``self_influence`` ``[N]`` and ``scores`` ``[len(probe), N]`` (``NaN`` where
        not streamed) and the ``seen`` mask ``[N]`` of the streamed indices (reduced over ranks)."""
        dataset, _ = self._dataset(trainer)
        n = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else 0
        device = pl_module.device
        own_self = torch.zeros(n, device=device, dtype=torch.float64)
        own_scores = torch.zeros(len(probe), n, device=device, dtype=torch.float64)
        seen = torch.zeros(n, device=device, dtype=torch.uint8)
        assert probe.targets is not None

        def triples() -> Iterator[tuple[Tensor, Tensor, Tensor]]:
            for indices, x, y in self._triples(trainer, pl_module, limit):
                seen[indices.to(device)] = 1
                yield indices, x, y

        try:
            self.tracin.update(
                pl_module,
                lr,
                triples(),
                self_influence=own_self,
                test_inputs=probe.inputs,
                test_targets=probe.targets.to(device),
                scores=own_scores,
            )
        except LightningXAIError as err:
            raise LightningXAIError(f"TracInMonitor at epoch {trainer.current_epoch}: {err}") from err
        if trainer.world_size > 1 and limit is None:
            # one all_reduce (sum) of [2 + P, N] float64 -- each rank sends and receives its size,
            # where an all_gather moved world_size times that. Each example was read by one rank, so
            # the sums place every entry exactly; the count row says which indices some rank streamed.
            packed = torch.cat([own_self[None], seen.to(torch.float64)[None], own_scores])
            packed = trainer.strategy.reduce(packed, reduce_op="sum")
            own_self, seen, own_scores = packed[0], packed[1] > 0, packed[2:]
        mask = seen.bool().cpu()
        nan = float("nan")
        return {
            "self_influence": own_self.cpu().masked_fill(~mask, nan),
            "scores": own_scores.cpu().masked_fill(~mask[None], nan),
            "seen": mask,
        }

    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.probe is not None
        lr, source = self._learning_rate(trainer, pl_module)
        contribution = self._contributions(trainer, pl_module, self.probe, lr, limit=None)
        added, scores, seen = contribution["self_influence"], contribution["scores"], contribution["seen"]
        if self.self_influence is None or self.self_influence.shape != added.shape:
            self.self_influence = torch.full_like(added, float("nan"))
            self.probe_scores = torch.full_like(scores, float("nan"))
        assert self.probe_scores is not None
        # an index joins the sums at its first streamed checkpoint; one a checkpoint did not stream keeps its sum
        old_self, old_scores = self.self_influence, self.probe_scores
        self.self_influence = torch.where(seen, old_self.nan_to_num(nan=0.0) + added, old_self)
        self.probe_scores = torch.where(seen[None], old_scores.nan_to_num(nan=0.0) + scores, old_scores)
        bad = seen & ~(torch.isfinite(added) & torch.isfinite(scores).all(0))
        if bool(bad.any()) and trainer.is_global_zero:
            where = bad.nonzero().flatten().tolist()
            self.warn(
                f"training example(s) at dataset index {where[:20]}{' ...' if len(where) > 20 else ''} have a "
                f"non-finite TracIn score at epoch {trainer.current_epoch} (a NaN or inf input, label or loss?); "
                "they are left out of the rankings and pictures."
            )
        record: dict[str, Any] = {
            "epoch": int(trainer.current_epoch),
            "step": int(trainer.global_step),
            "learning_rate": lr,
            "param_group": source,
        }
        if self.save_checkpoints and self._dir is not None:
            path = self._dir / f"epoch={trainer.current_epoch:03d}-step={trainer.global_step}.pt"
            if trainer.is_global_zero:
                save_tracin_checkpoint(
                    path,
                    pl_module,
                    lr,
                    epoch=record["epoch"],
                    step=record["step"],
                    param_group=source,
                    layers=self.layers,
                )
            record["path"] = str(path)
        self.checkpoints.append(record)
        if not trainer.is_global_zero:
            return
        if not bool(_rankable(self.self_influence, self.probe_scores).any()):
            self.warn("no training example has a finite TracIn score yet; nothing to draw.")
            return
        results = self._picture_data(trainer, self.self_influence, self.probe_scores, lr)
        probe = self.probe.to("cpu")
        self.publish(trainer, lambda sinks, info: self.render(sinks, info, probe, results))

    def _picture_data(
        self, trainer: pl.Trainer, self_influence: Tensor, scores: Tensor, lr: float, index_map: Optional[Tensor] = None
    ) -> dict[str, Tensor]:
        """Everything :meth:`render` draws, as CPU tensors (images read from the scored view).
        ``index_map`` maps positions in ``self_influence`` to dataset indices (default: identity).
        Positions whose score is not finite (never streamed, or a NaN example) are left out."""
        if index_map is None:
            index_map = torch.arange(self_influence.numel())
        keep = _rankable(self_influence, scores).nonzero().flatten()
        self_influence, scores, index_map = self_influence[keep], scores[:, keep], index_map[keep]
        top = self_influence.float().topk(min(self.num_top_examples, self_influence.numel()))
        k = min(self.num_top_examples, _tracin.MAX_INFLUENCERS, scores.shape[1])
        pro = scores.float().topk(k, dim=1)
        opp = scores.float().topk(k, dim=1, largest=False)
        pro_indices, opp_indices, top_indices = index_map[pro.indices], index_map[opp.indices], index_map[top.indices]
        wanted = torch.cat([top_indices, pro_indices.flatten(), opp_indices.flatten()])
        images, labels = self._examples(trainer, wanted)
        t = top_indices.numel()
        return {
            "top_indices": top_indices,
            "top_scores": top.values,
            "top_images": images[:t],
            "top_labels": labels[:t],
            "pro_indices": pro_indices,
            "pro_scores": pro.values,
            "opp_indices": opp_indices,
            "opp_scores": opp.values,
            **_tracin.influencer_images(images, labels, t, (scores.shape[0], k)),
            "self_influence": self_influence.float(),
            "learning_rate": torch.tensor(lr),
            "checkpoints": torch.tensor(len(self.checkpoints)),
        }

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One probe image against the first two training examples, rendered into encode-only
        sinks: a model, loss, dataset or picture that cannot work fails before training."""
        assert self.probe is not None
        lr, _ = self._learning_rate(trainer, pl_module)
        try:
            part = self._contributions(trainer, pl_module, self.probe[:1], lr, limit=2)
        except (LightningXAIError, RuntimeError, TypeError) as err:
            raise ValueError(f"TracInMonitor fails at fit start (before training): {err}") from err
        seen = part["seen"].nonzero().flatten()  # the examples read
        if trainer.is_global_zero and bool(_rankable(part["self_influence"][seen], part["scores"][:, seen]).any()):
            results = self._picture_data(
                trainer, part["self_influence"][seen], part["scores"][:, seen], lr, index_map=seen
            )
            self._dry_running = True
            try:
                self.render(self.dry_run_sinks(), self.run_info(trainer), self.probe[:1].to("cpu"), results)
            finally:
                self._dry_running = False

    # -- rendering (rank zero, background thread) ----------------------------------------------
    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        assert probe.targets is not None
        scalars = {
            "xai/tracin/learning_rate": float(results["learning_rate"]),
            "xai/tracin/checkpoints": float(results["checkpoints"]),
        }
        _tracin.render(sinks, info, probe, results, self.class_names, title_suffix="", scalars=scalars)
