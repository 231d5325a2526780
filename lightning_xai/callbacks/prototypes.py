"""Training steps and explanations of a :class:`~lightning_xai.modules.PrototypeHead` (ProtoPNet).

* :class:`PrototypePush`: the push (projection) step. **It changes the model on purpose.**
* :class:`PrototypeStages`: the paper's three training stages, by setting ``requires_grad``
  (and optionally the optimiser groups' learning rates). **It changes training on purpose.**
* :class:`PrototypeMonitor`: "this looks like that" for a fixed probe set, every epoch. It only
  observes: training with and without it is bitwise identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, default_collate
from typing_extensions import override

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import observe
from lightning_xai.callbacks.base import MonitorBase, ProbeMonitor, RunInfo, _first_loader
from lightning_xai.data.probe import Probe, split_batch
from lightning_xai.modules.prototype import (
    STAGES,
    NearestPatches,
    PrototypeHead,
    find_prototype_head,
    set_stage,
)
from lightning_xai.render.prototypes import crop_patches, prototype_gallery, this_looks_like_that
from lightning_xai.sinks import Sink

__all__ = ["PrototypeMonitor", "PrototypePush", "PrototypeStages"]


class _Stop(Exception):
    """Raised by the feature hook once the head's input is captured: the rest of the forward is skipped."""


def _head_features(model: nn.Module, head: PrototypeHead, x: Tensor) -> Tensor:
    """The feature map ``head`` receives when ``model(x)`` runs (the forward stops at the head)."""
    captured: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0])
        raise _Stop

    handle = head.register_forward_pre_hook(hook)
    try:
        model(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not captured:
        raise ValueError(f"The PrototypeHead was not called by {type(model).__name__}'s forward.")
    return captured[0]


def _train_dataset(trainer: pl.Trainer) -> Optional[Dataset]:
    """The training dataloader's dataset, also before the fit loop has loaded its data (the global
    RNG is kept: building a user's dataloader may draw from it)."""
    loader = _first_loader(trainer.train_dataloader)
    if loader is None:
        source = trainer.fit_loop._data_source  # private: no public accessor before the loop runs
        with torch.random.fork_rng(devices=[]):
            loader = _first_loader(source.dataloader()) if source.is_defined() else None
    return getattr(loader, "dataset", None)


def _dataset_labels(dataset: Dataset) -> Optional[Tensor]:
    """The dataset's labels when it exposes them (``labels`` / ``targets``), else ``None``."""
    for name in ("labels", "targets"):
        labels = getattr(dataset, name, None)
        if labels is not None:
            try:
                return torch.as_tensor(labels).flatten()
            except (TypeError, ValueError):
                return None
    return None


def _load_items(dataset: Any, indices: Sequence[int]) -> Tensor:
    """The inputs of ``dataset[i]`` for each ``i`` as one batch, read with the global RNG untouched
    (``dataset`` may be a DataLoader: its dataset, read with its ``collate_fn``)."""
    collate = default_collate
    if isinstance(dataset, DataLoader):
        collate, dataset = dataset.collate_fn or default_collate, dataset.dataset
    with torch.random.fork_rng(devices=[]):
        batch = collate([dataset[i] for i in indices])
    return split_batch(batch)[0]


class PrototypePush(MonitorBase):
    """ProtoPNet's push (prototype projection) as a callback. **It changes the model on purpose.**

    Schedule: at the end of the validation of every ``every_n_epochs``-th epoch, counting only the
    epochs outside a last-layer stage of the trainer's :class:`PrototypeStages` (as in the authors'
    ``main.py``, whose last-layer iterations are an inner loop after each push: with the defaults,
    a push every 10 warm/joint epochs and 20 last-layer epochs after it, a 30-epoch cycle). A push
    is only scheduled where what follows it fits before ``max_epochs``: its whole last-layer stage
    (at least one validated epoch without :class:`PrototypeStages`), so a push never runs on the
    final epoch and the fit ends on the model its last validation measured. A due push that does
    not fit is skipped, with a warning at ``setup`` (:meth:`plan` gives the schedule). A fit ended
    earlier by ``max_steps``, early stopping or a time limit is not foreseen.

    Each push streams the training examples the training sampler yields once (sorted, this rank's
    share under DDP; see :meth:`~lightning_xai.callbacks.MonitorBase.iter_dataset`), read from
    ``dataset`` when given (ProtoPNet's un-augmented ``train_push_loader``), embeds every image with the model in eval mode,
    and keeps for each prototype the nearest embedding patch of an image of the prototype's own
    class; the per-rank nearest patches are all-gathered and reduced, so every rank pushes the
    same prototypes. Each prototype is then *replaced* by its patch, and the head records the
    source image's dataset index, the patch's grid position and its pixel box (the head's
    ``prototype_source``, ``prototype_position``, ``prototype_box`` buffers, saved with the model).

    It is the only callback besides :class:`PrototypeStages` that changes the model, and it
    changes nothing else: modules' train/eval modes, ``requires_grad``, gradients, BatchNorm
    statistics, the RNG and the training data stream are as they were (the training dataloader is
    not touched: the dataset is read through its own loader with the RNG forked).

    Logged (rank zero, in the background): ``xai/prototypes/gallery`` (each prototype's patch, its
    source image with the box, and its similarity map over that image; the image is the exact view
    the patch was pushed from, kept during the pass, so a random crop or flip cannot move the box
    off it: this keeps ``max_logged`` (default all) images of the input's size, gathered over ranks
    under DDP, and :attr:`source_images` holds them until the next push), the prototype vectors as
    an embedding with their patches, and ``xai/prototypes/push/mean_shift`` (how far the
    prototypes moved) and ``.../mean_distance`` (their distance to the nearest patch before).

    Args:
        every_n_epochs: Push every n epochs (the paper: 10, starting at epoch 10).
        batch_size: Batch size of the pass over the training set (default: the training loader's).
        log_gallery: Log the prototype gallery and embedding after each push.
        max_logged: Log at most this many prototypes in the gallery (``None``: all).
        synchronous_logging: Render on the training thread (debugging).
        dataset: Optional view of the training examples to push onto (a map-style dataset or a
            DataLoader, e.g. without random augmentation), with the training dataset's length and
            indexing; which indices are read still comes from the training sampler.

    Raises:
        ValueError: at ``setup``: not exactly one PrototypeHead in the model, an empty training
            dataset, or a class without training images (when the dataset exposes ``labels`` or
            ``targets``; otherwise at the first push).

    Examples:
        >>> push = PrototypePush(every_n_epochs=10)
    """

    log_key = "prototypes/push"  # type: ignore[assignment]

    def __init__(
        self,
        *,
        every_n_epochs: int = 10,
        batch_size: Optional[int] = None,
        log_gallery: bool = True,
        max_logged: Optional[int] = None,
        synchronous_logging: Optional[bool] = None,
        dataset: Optional[Any] = None,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, synchronous_logging=synchronous_logging)
        self.dataset = dataset
        self.source_images: Optional[Tensor] = None
        """``[count, C, H, W]`` (CPU) the images the gallery's prototypes were last pushed from, as
        streamed (``None`` until a push that logs its gallery)."""
        self.source_indices: Optional[Tensor] = None
        """``[count]`` the dataset indices of :attr:`source_images`."""
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.max_logged = check_int("max_logged", max_logged, 1, allow_none=True)
        if not isinstance(log_gallery, bool):
            raise TypeError(f"Expected argument `log_gallery` to be a bool, but got {log_gallery!r}.")
        self.log_gallery = log_gallery
        self.push_epochs: list[int] = []
        self._kept_images: Optional[Tensor] = None

    # -- state -----------------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["push_epochs"] = list(self.push_epochs)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.push_epochs = list(state_dict.get("push_epochs", []))

    # -- setup -----------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # a training step, not only a monitor: it runs (and logs nothing) without a logger
        self.check(trainer, pl_module)
        if stage == "fit":
            self._warn_skipped(trainer)

    # -- schedule --------------------------------------------------------------------------------
    @staticmethod
    def _stages(trainer: pl.Trainer) -> Optional[PrototypeStages]:
        stages = [c for c in trainer.callbacks if isinstance(c, PrototypeStages)]  # type: ignore[attr-defined]
        return stages[0] if stages else None

    def decision(
        self, epoch: int, push_epochs: Sequence[int], max_epochs: Optional[int], stages: Optional[PrototypeStages]
    ) -> Optional[str]:
        """Whether a push runs at the end of ``epoch``, given the earlier ``push_epochs``.

        Returns ``"push"``, ``"skip"`` (due, but what must follow it does not fit before
        ``max_epochs``; ``None`` or negative: no known end) or ``None`` (not due).
        """
        if stages is not None:
            if stages.stage_at(epoch, push_epochs) == "last_layer":
                return None
            trained = epoch + 1 - stages.last_layer_epochs_through(epoch, push_epochs)
            after = max(stages.last_layer_epochs, 1)
        else:
            trained, after = epoch + 1, 1
        if trained % self.every_n_epochs:
            return None
        if max_epochs is not None and max_epochs >= 0 and epoch + after > max_epochs - 1:
            return "skip"
        return "push"

    def plan(self, max_epochs: int, stages: Optional[PrototypeStages] = None) -> tuple[list[int], list[int]]:
        """The epochs a fresh fit of ``max_epochs`` pushes at, and those where a due push is skipped.

        Examples:
            >>> PrototypePush(every_n_epochs=10).plan(100, PrototypeStages(warm_epochs=5, last_layer_epochs=20))
            ([9, 39, 69], [99])
        """
        pushes: list[int] = []
        skipped: list[int] = []
        for epoch in range(max_epochs):
            decision = self.decision(epoch, pushes, max_epochs, stages)
            if decision == "push":
                pushes.append(epoch)
            elif decision == "skip":
                skipped.append(epoch)
        return pushes, skipped

    def _warn_skipped(self, trainer: pl.Trainer) -> None:
        max_epochs = trainer.max_epochs
        if max_epochs is None or max_epochs < 0:
            return
        stages = self._stages(trainer)
        pushes, skipped = self.plan(max_epochs, stages)
        if not skipped:
            return
        if stages is not None and stages.last_layer_epochs > 0:
            after, follow = stages.last_layer_epochs, f"its {stages.last_layer_epochs} last-layer epoch(s)"
        else:
            after, follow = 1, "a validated epoch after it"
        last = f"the last push runs after epoch {pushes[-1]}" if pushes else "no push runs"
        self.warn(
            f"with max_epochs={max_epochs}, the push(es) due after epoch(s) {skipped} are skipped: {follow} would "
            f"not fit before the fit ends, which must end on a validated model; {last}. "
            f"max_epochs={skipped[0] + after + 1} would fit the first of them."
        )

    @override
    def _epoch_due(self, trainer: pl.Trainer) -> bool:
        if self.every_n_train_steps is not None or self._last_epoch_run == trainer.current_epoch:
            return False
        epoch = int(trainer.current_epoch)
        return self.decision(epoch, self.push_epochs, trainer.max_epochs, self._stages(trainer)) == "push"

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _, head = find_prototype_head(pl_module)
        dataset = _train_dataset(trainer)
        if dataset is None:
            return  # iter_dataset raises a clear error at the first push
        if hasattr(dataset, "__len__") and len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"{type(self).__name__}: the training dataset is empty; there is nothing to push onto.")
        labels = _dataset_labels(dataset)
        if labels is not None:
            missing = sorted(set(range(head.num_classes)) - set(labels.long().tolist()))
            if missing:
                raise ValueError(
                    f"{type(self).__name__}: the training dataset has no image of class(es) {missing}; every "
                    "class needs at least one training example for its prototypes."
                )

    # -- one push --------------------------------------------------------------------------------
    def nearest_patches(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[NearestPatches, tuple]:
        """Stream the training set and reduce the nearest own-class patch per prototype over ranks.

        Returns the reduced :class:`~lightning_xai.modules.NearestPatches` and the input image size.
        """
        _, head = find_prototype_head(pl_module)
        nearest = NearestPatches.empty(head)
        image_size: Optional[tuple[int, ...]] = None
        count = self._gallery_count(head) if self._keeps_images(trainer) else 0
        images: Optional[Tensor] = None  # the streamed image each of the first `count` prototypes' patch came from
        with observe(pl_module), torch.no_grad():
            for indices, batch in self.iter_dataset(trainer, pl_module, self.dataset, batch_size=self.batch_size):
                x, y, _ = split_batch(batch)
                if y is None:
                    raise ValueError(f"{type(self).__name__}: the training batches carry no labels to push with.")
                image_size = tuple(x.shape[-2:])
                features = _head_features(pl_module, head, x)
                before = nearest.distance[:count].clone()
                nearest.update(head, features, torch.as_tensor(y), indices.to(features.device))
                if count:
                    if images is None:
                        images = torch.zeros(count, *x.shape[1:], dtype=x.dtype, device=x.device)
                    changed = (nearest.distance[:count] < before).nonzero().flatten()
                    if changed.numel():
                        batch_indices = indices.to(nearest.source.device)
                        where = (batch_indices[None, :] == nearest.source[changed][:, None]).int().argmax(dim=1)
                        images[changed] = x[where.to(x.device)]
        if trainer.world_size > 1 and count:
            assert images is not None
            winner = trainer.strategy.all_gather(nearest.distance[:count]).argmin(dim=0)  # as NearestPatches.reduce
            images = trainer.strategy.all_gather(images)[winner, torch.arange(count, device=winner.device)]
        self._kept_images = images
        if trainer.world_size > 1:
            gathered = [trainer.strategy.all_gather(t) for t in (nearest.distance, nearest.patch)]
            gathered += [trainer.strategy.all_gather(t) for t in (nearest.source, nearest.position)]
            sizes = trainer.strategy.all_gather(torch.tensor(image_size or (0, 0), device=nearest.distance.device))
            grid = trainer.strategy.all_gather(torch.tensor(nearest.grid or (0, 0), device=nearest.distance.device))
            nearest = NearestPatches.reduce(NearestPatches(*gathered, grid=tuple(grid.amax(0).tolist())))
            image_size = tuple(sizes.amax(0).tolist())
        if image_size is None or nearest.grid is None:
            raise ValueError(f"{type(self).__name__}: the training dataset yielded no batch to push onto.")
        return nearest, image_size

    def _keeps_images(self, trainer: pl.Trainer) -> bool:
        return self.log_gallery and bool(trainer.loggers)

    def _gallery_count(self, head: PrototypeHead) -> int:
        return head.num_prototypes if self.max_logged is None else min(self.max_logged, head.num_prototypes)

    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _, head = find_prototype_head(pl_module)
        self.source_images = self.source_indices = None  # until this push's gallery keeps its own
        nearest, image_size = self.nearest_patches(trainer, pl_module)
        kept, self._kept_images = self._kept_images, None
        before = head.prototypes.detach().clone()
        with torch.inference_mode(False):
            head.push(nearest, image_size)  # the one intended change to the model
        self.push_epochs.append(int(trainer.current_epoch))
        shift = (head.prototypes.detach() - before).flatten(1).norm(dim=1).mean().item()
        finite = nearest.distance[torch.isfinite(nearest.distance)]
        scalars = {
            "xai/prototypes/push/mean_shift": shift,
            "xai/prototypes/push/mean_distance": finite.mean().item() if finite.numel() else math.nan,
        }
        if not trainer.is_global_zero or not trainer.loggers:
            return
        if not self.log_gallery:
            self._publish_scalars(trainer, scalars)
            return
        assert kept is not None
        gallery = self._gallery_inputs(pl_module, head, kept)
        classes = head.prototype_class.cpu()
        vectors = head.prototypes.detach().flatten(1).cpu().float()

        def render(sinks: list[Sink], info: RunInfo) -> None:
            images, boxes, maps = gallery
            picked = list(range(images.shape[0]))
            captions = [f"proto {j}\nclass {int(classes[j])}" for j in picked]
            figure = prototype_gallery(
                images, boxes, maps, captions, ncols=2, title=f"prototypes after push, epoch {info.epoch}"
            )
            patches = crop_patches(images, boxes, size=(16, 16))
            for sink in sinks:
                sink.log_scalars(scalars, info.step)
                sink.log_image("xai/prototypes/gallery", figure, info.step)
                if images.shape[0] == vectors.shape[0]:
                    sink.log_embedding(
                        "xai/prototypes/vectors", vectors, info.step, [str(int(c)) for c in classes], patches
                    )

        self.publish(trainer, render)

    def _gallery_inputs(
        self, pl_module: pl.LightningModule, head: PrototypeHead, x: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(source images, boxes, similarity maps on the source) of the logged prototypes, on the CPU:
        each image is the one kept while streaming (the exact view the patch was pushed from)."""
        count = x.shape[0]
        self.source_images = x.detach().float().cpu()
        self.source_indices = head.prototype_source[:count].cpu().clone()
        with observe(pl_module), torch.no_grad():
            distances = head.distances(_head_features(pl_module, head, x))  # [n, P, h, w]
            own = distances[torch.arange(count), torch.arange(count)]  # each prototype on its own source
            maps = head.similarity(own).unsqueeze(1)
        return x.detach().float().cpu(), head.prototype_box[:count].cpu(), maps.float().cpu()


class PrototypeStages(Callback):
    """ProtoPNet's training stages, switched at the start of every training epoch.
    **It changes training on purpose** (which parameters learn).

    * ``"warm"`` for the first ``warm_epochs`` epochs: backbone frozen, the add-on layers and the
      prototypes train (the paper: 5 epochs);
    * ``"last_layer"`` for ``last_layer_epochs`` epochs after each push of the trainer's
      :class:`PrototypePush`: only the last layer trains (the paper's convex step, with the L1
      term on the wrong-class weights);
    * ``"joint"`` otherwise: backbone, add-on layers and prototypes train.

    The default of 20 last-layer epochs is the authors' (``main.py`` runs 20 last-layer
    iterations after every push, each a full epoch over the training set followed by a test
    pass). Here each is one trainer epoch with its validation, so every push adds 20 epochs:
    each a full forward pass over the training set (the backward reaches only the last layer,
    so one costs roughly a third of a joint epoch when the backbone dominates). Those epochs do
    not count towards the push period, and :class:`PrototypePush` only pushes where the whole
    stage fits before ``max_epochs`` (so the fit ends on a validated model).

    The switch sets ``requires_grad`` (:func:`~lightning_xai.modules.set_stage`); build one
    optimiser over :func:`~lightning_xai.modules.prototype_parameter_groups` so a frozen group
    simply gets no gradient. With ``learning_rates`` (stage -> group name -> lr) the callback also
    sets the learning rate of each named group of every optimiser when a stage begins.

    Under DDP, parameters that stop receiving gradients need
    ``strategy="ddp_find_unused_parameters_true"`` (checked at ``setup``).

    Args:
        warm_epochs: Epochs of the warm-up stage.
        last_layer_epochs: Epochs of last-layer-only training after each push.
        learning_rates: Optional per-stage learning rates of the named parameter groups.

    Raises:
        ValueError: bad arguments; at ``setup``: no PrototypeHead, or DDP without
            ``find_unused_parameters``.

    Examples:
        >>> stages = PrototypeStages(warm_epochs=5, last_layer_epochs=20)
        >>> [stages.stage_at(e, push_epochs=[9]) for e in (4, 9, 10, 29, 30)]
        ['warm', 'joint', 'last_layer', 'last_layer', 'joint']
    """

    def __init__(
        self,
        *,
        warm_epochs: int = 5,
        last_layer_epochs: int = 20,
        learning_rates: Optional[Mapping[str, Mapping[str, float]]] = None,
    ) -> None:
        self.warm_epochs = check_int("warm_epochs", warm_epochs, 0)
        self.last_layer_epochs = check_int("last_layer_epochs", last_layer_epochs, 0)
        rates: dict[str, dict[str, float]] = {}
        for stage, groups in (learning_rates or {}).items():
            if stage not in STAGES:
                raise ValueError(f"Unknown stage {stage!r} in `learning_rates`; expected names from {STAGES}.")
            rates[stage] = {str(k): check_float(f"learning_rates[{stage!r}][{k!r}]", v, 0.0) for k, v in groups.items()}
        self.learning_rates = rates
        self.stage: Optional[str] = None
        self.history: list[tuple[int, str]] = []

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(warm_epochs=self.warm_epochs, last_layer_epochs=self.last_layer_epochs)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "history": list(self.history)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stage = state_dict.get("stage")
        self.history = [tuple(h) for h in state_dict.get("history", [])]  # type: ignore[misc]

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        find_prototype_head(pl_module)
        kwargs = getattr(trainer.strategy, "_ddp_kwargs", None)
        if trainer.world_size > 1 and isinstance(kwargs, dict) and not kwargs.get("find_unused_parameters", False):
            raise ValueError(
                "PrototypeStages freezes parameters during training, which DDP only allows with "
                "find_unused_parameters: use strategy='ddp_find_unused_parameters_true' "
                "(or 'ddp_spawn_find_unused_parameters_true')."
            )

    def _push(self, trainer: pl.Trainer) -> Optional[PrototypePush]:
        pushes = [c for c in trainer.callbacks if isinstance(c, PrototypePush)]  # type: ignore[attr-defined]
        return pushes[0] if pushes else None

    def stage_at(self, epoch: int, push_epochs: Sequence[int]) -> str:
        """The stage of ``epoch`` given the epochs at whose end a push ran."""
        if epoch < self.warm_epochs:
            return "warm"
        earlier = [p for p in push_epochs if p < epoch]
        if earlier and epoch - max(earlier) <= self.last_layer_epochs:
            return "last_layer"
        return "joint"

    def last_layer_epochs_through(self, epoch: int, push_epochs: Sequence[int]) -> int:
        """How many of the epochs ``0 .. epoch`` are ``"last_layer"`` by :meth:`stage_at` (``O(pushes)``)."""
        pushes = sorted(set(int(p) for p in push_epochs))
        count = 0
        for i, p in enumerate(pushes):
            following = pushes[i + 1] if i + 1 < len(pushes) else math.inf
            low = max(p + 1, self.warm_epochs)
            high = min(p + self.last_layer_epochs, following, epoch)
            count += max(0, int(high) - low + 1)
        return count

    def _apply(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        set_stage(pl_module, stage)
        rates = self.learning_rates.get(stage, {})
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                if group.get("name") in rates:
                    group["lr"] = rates[group["name"]]

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        push = self._push(trainer)
        stage = self.stage_at(trainer.current_epoch, push.push_epochs if push is not None else [])
        self._apply(trainer, pl_module, stage)
        if not self.history or self.history[-1][1] != stage:
            self.history.append((int(trainer.current_epoch), stage))
        self.stage = stage


class PrototypeMonitor(ProbeMonitor):
    """ "This looks like that" for a fixed probe set: each probe image's top-k prototypes.

    Every run (default: every epoch), for each probe image it logs
    ``xai/prototypes/this_looks_like_that/<i>``: one row per top-k prototype (by similarity) with the
    prototype's similarity map upsampled over the image, the prototype's patch and its source
    image with the box (from the last push; blank before the first), captioned with the
    similarity and the prototype's weight for the predicted class. It observes only: training
    with and without it is bitwise identical.

    The source image is the exact view the prototype was pushed from when the trainer's
    :class:`PrototypePush` kept it (:attr:`PrototypePush.source_images`); otherwise (after a
    resume, or beyond its ``max_logged``) it is read again from ``dataset``, else the push's
    ``dataset``, else the training dataset: give an un-augmented view there, or a random crop or
    flip of the re-read image may not match the box.

    Args:
        num_samples: Size of the probe set (class-balanced, chosen at ``setup``).
        prototypes_per_image: Prototypes shown per probe image (its most similar ones).
        every_n_epochs: Run every n epochs.
        every_n_train_steps: Run every n steps instead.
        seed: Seed of the probe selection.
        probe: Optional user-provided probe (see :class:`~lightning_xai.callbacks.ProbeMonitor`).
        class_names: Optional class names for the captions.
        max_overhead: Time budget as a fraction of training time.
        synchronous_logging: Render on the training thread (debugging).
        dataset: Optional view of the training examples to read source images from (see above).

    Examples:
        >>> monitor = PrototypeMonitor(num_samples=4, prototypes_per_image=3)
    """

    log_key = "prototypes"  # type: ignore[assignment]

    def __init__(
        self,
        *,
        num_samples: int = 8,
        prototypes_per_image: int = 3,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        class_names: Optional[Sequence[str]] = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
        dataset: Optional[Any] = None,
    ) -> None:
        super().__init__(
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            seed=seed,
            probe=probe,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        self.prototypes_per_image = check_int("prototypes_per_image", prototypes_per_image, 1)
        self.class_names = list(class_names) if class_names is not None else None
        self.dataset = dataset
        self._dataset: Optional[Any] = None
        self._push: Optional[PrototypePush] = None

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {
            **super()._state_key_fields(),
            "top_k": self.prototypes_per_image,
        }  # the field name is pinned (old checkpoints)

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _, head = find_prototype_head(pl_module)
        if self.prototypes_per_image > head.num_prototypes:
            raise ValueError(
                f"{type(self).__name__}: prototypes_per_image={self.prototypes_per_image} is more than the head's {head.num_prototypes} prototypes."
            )
        pushes = [c for c in trainer.callbacks if isinstance(c, PrototypePush)]  # type: ignore[attr-defined]
        self._push = pushes[0] if pushes else None
        push_view = self._push.dataset if self._push is not None else None
        views = [d for d in (self.dataset, push_view) if d is not None]  # (no truth test: len() 0 is a view too)
        self._dataset = views[0] if views else _train_dataset(trainer)

    def _source_images(self, trainer: pl.Trainer, pl_module: pl.LightningModule, sources: Tensor) -> Tensor:
        """The pushed-from image of each prototype source in ``sources`` ``[m]`` (model device and dtype):
        the push's kept view where it holds that source, else read from the view."""
        kept = self._push.source_images if self._push is not None else None
        kept_at = self._push.source_indices if self._push is not None else None
        wanted = sources.tolist()
        position = {int(i): j for j, i in enumerate(kept_at.tolist())} if kept_at is not None else {}
        missing = sorted({i for i in wanted if i not in position})
        read = _load_items(self._dataset, missing) if missing and self._dataset is not None else None
        rows = []
        for i in wanted:
            if i in position:
                assert kept is not None
                rows.append(kept[position[i]])
            elif read is not None:
                rows.append(read[missing.index(i)])
            else:
                raise ValueError(f"{type(self).__name__}: found no dataset to read prototype source {i} from.")
        return self.to_model(trainer, pl_module, torch.stack(rows))

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        _, head = find_prototype_head(pl_module)
        with observe(pl_module), torch.no_grad():
            output = head.explain(_head_features(pl_module, head, probe.inputs))
            sims = output.similarities  # [n, P]
            top_sim, top = sims.topk(self.prototypes_per_image, dim=1)  # [n, k]
            n, k = top.shape
            rows = torch.arange(n, device=top.device)[:, None]
            maps = head.similarity(output.distances[rows, top])  # [n, k, h, w]
            predicted = output.logits.argmax(dim=1)
            weights = head.last_layer.weight[predicted[:, None], top]  # [n, k]
            sources = head.prototype_source[top]  # [n, k]
            boxes = head.prototype_box[top]  # [n, k, 4]
            known = sources >= 0
            images = torch.zeros(n, k, *probe.inputs.shape[1:], dtype=probe.inputs.dtype, device=probe.inputs.device)
            if bool(known.any()) and self._dataset is not None:
                images[known] = self._source_images(trainer, pl_module, sources[known]).to(images.dtype)
        return {
            "logits": output.logits,
            "top": top,
            "similarity": top_sim,
            "weight": weights,
            "maps": maps,
            "source_images": images,
            "source_boxes": boxes,
            "source_index": sources,
        }

    def _name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        predicted = results["logits"].argmax(dim=1)
        for i in range(results["top"].shape[0]):
            captions = []
            for j, s, w, src in zip(
                results["top"][i].tolist(),
                results["similarity"][i].tolist(),
                results["weight"][i].tolist(),
                results["source_index"][i].tolist(),
            ):
                where = f"#{src}" if src >= 0 else "(no push)"
                captions.append(f"proto {j} {where}\nsim {s:.2f} x w {w:.2f}")
            truth = "?" if probe.targets is None else self._name(int(probe.targets[i]))
            figure = this_looks_like_that(
                probe.inputs[i],
                results["maps"][i].unsqueeze(1),
                results["source_images"][i],
                results["source_boxes"][i],
                captions,
                title=f"true: {truth}  pred: {self._name(int(predicted[i]))}  (epoch {info.epoch})",
            )
            for sink in sinks:
                sink.log_image(f"xai/prototypes/this_looks_like_that/{i}", figure, info.step)
