"""``TCAVMonitor``: watch, epoch by epoch, whether a network learns concepts named by examples."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from typing_extensions import override

from lightning_xai._validation import check_int
from lightning_xai.attribution.base import OutputType, observe
from lightning_xai.callbacks.base import MonitorBase, RunInfo, _first_loader
from lightning_xai.concepts import TCAV
from lightning_xai.concepts.cav import check_set_size
from lightning_xai.concepts.examples import load_examples, sample_examples
from lightning_xai.concepts.functional import layer_activations
from lightning_xai.concepts.tcav import check_relative, relative_name
from lightning_xai.data.probe import select_probe
from lightning_xai.render.sinks import Sink

__all__ = ["TCAVMonitor", "TCAV_FIELDS", "tcav_demo_monitor"]

TCAV_FIELDS: tuple[str, ...] = (
    "score",
    "score_std",
    "p_value",
    "significant",
    "accuracy",
    "separates",
    "random_mean",
    "random_std",
    "sign_count",
)
"""The leading fields of a packed result row; the ``n_random`` scores and ``n_random`` random
scores follow."""


def _scored_batches(batches: Any, classes: list[int]) -> Any:
    """The rows of ``(x, y, ...)`` or dict batches whose target is one of ``classes``, with the
    target replaced by its index in ``classes`` (so the probe reader balances over them only)."""
    from lightning_xai.data.probe import TARGET_KEYS

    lookup = torch.full((max(classes) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(y: Tensor) -> tuple[Tensor, Tensor]:
        y = torch.as_tensor(y).reshape(-1).long().cpu()
        mapped = torch.where((y >= 0) & (y < lookup.numel()), lookup[y.clamp(0, lookup.numel() - 1)], -1)
        return mapped >= 0, mapped

    for batch in batches:
        if isinstance(batch, Mapping):
            key = next((k for k in TARGET_KEYS if k in batch), None)
            if key is None:
                yield batch
                continue
            mask, mapped = keep(batch[key])
            out = {
                k: (v[mask.to(v.device)] if isinstance(v, Tensor) and v.shape[:1] == mask.shape else v)
                for k, v in batch.items()
            }
            out[key] = mapped[mask]
            yield out
        elif isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[1], Tensor):
            mask, mapped = keep(batch[1])
            rest = [
                t[mask.to(t.device)] if isinstance(t, Tensor) and t.shape[:1] == mask.shape else t for t in batch[2:]
            ]
            yield (batch[0][mask.to(batch[0].device)], mapped[mask], *rest)
        else:
            yield batch


def _classes_arg(target_classes: Union[int, Sequence[int]]) -> list[int]:
    if isinstance(target_classes, int) and not isinstance(target_classes, bool):
        target_classes = [target_classes]
    if not isinstance(target_classes, Sequence) or not target_classes:
        raise TypeError(
            f"Expected argument `target_classes` to be an int or a non-empty list of ints, but got {target_classes!r}."
        )
    return [check_int("target_classes", k, 0) for k in target_classes]


class TCAVMonitor(MonitorBase):
    """TCAV scores of named concepts for chosen classes at chosen layers, every few epochs.

    Each run trains every CAV afresh on the current weights (concept vs ``n_random`` random sets,
    each ``relative`` pair against each other, and random vs random, at every layer, from one
    forward pass over all examples) and scores each target class on its own inputs (one forward
    and backward pass per class), with the statistic and significance test of
    :class:`~lightning_xai.concepts.TCAV` (Bonferroni over concepts x layers). It logs, to every
    logger, under ``xai/tcav/<layer>/<concept>/<class>/`` (a relative pair's concept is
    ``<positive>-vs-<negative>``):

    * scalars ``score`` (the tested statistic), ``sign_count`` (the paper's TCAV score),
      ``p_value`` (corrected), ``significant`` (1 or 0) and ``cav_accuracy`` (held-out CAV
      accuracy; a CAV near chance is also warned about once and marked ``separates=False``);
    * ``xai/tcav/<layer>/summary``: the paper's bar chart (classes x concepts, error bars = standard
      deviation over random runs, insignificant bars grey and hatched, never dropped, the random
      CAVs' mean +- sd as reference marks), and ``xai/tcav/<layer>/history``: every concept x
      class score over the runs so far;
    * the CAVs to TensorBoard's embedding projector (``xai/tcav/<layer>/cavs``, labelled by
      concept; ``random`` for the random-vs-random CAVs), and a table ``xai/tcav/table``.

    The history of every run is kept in ``state_dict`` (a resumed run continues its curves).
    Training is never perturbed (every computation runs inside
    :func:`~lightning_xai.attribution.observe`). The concept, random and input sets stay on the
    CPU and go to the device batch by batch; only ``num_inputs`` inputs of each *scored* class are
    kept. Under DDP rank zero fits the CAVs and broadcasts them; the target classes are split over
    the ranks and the rows gathered.

    Args:
        concepts: ``{name: examples}``: a tensor, ``Dataset``, ``DataLoader`` or image-folder path each.
        image_mode: How image folders are read: ``"RGB"`` (3 channels) or ``"L"`` (grayscale, 1 channel).
        image_size: Resize images read from folders to ``image_size`` x ``image_size``.
        layers: One dotted layer name or several.
        target_classes: The class index or indices to score.
        n_random: Random sets per concept (at least 2).
        alpha: Significance level.
        random_examples: Pool of random counter-examples (tensor, ``Dataset``) or a list of
            ``n_random`` sets; default the training dataset (sets drawn once with ``seed``).
        random_size: Examples per random set (default: the largest concept set).
        inputs: The class inputs: a tuple ``(inputs, targets)`` of tensors, a ``Dataset`` or a
            ``DataLoader``; default the validation dataloader (the training one without it).
        num_inputs: Inputs per target class (chosen once at ``setup``, class-balanced).
        class_names: Names for the class indices in the logs (default ``class_<k>``, or the
            datamodule's ``classes``).
        relative: ``(positive, negative)`` pairs of concept names to score as relative CAVs.
        classifier: ``"logistic"`` or ``"svm"``.
        statistic: ``"effect"`` (default), ``"cosine"``, ``"sign"`` or ``"magnitude"`` (see
            :mod:`lightning_xai.concepts.tcav`).
        test: ``"prediction"`` or ``"welch"`` (see :class:`~lightning_xai.concepts.TCAV`).
        batch_size: Examples per forward pass.
        seed: Seed of the random sets, the input choice and the CAV splits.
        log_embeddings: Log the CAVs to the embedding projector.
        every_n_epochs: Run every n epochs.
        every_n_steps: Run every n training steps instead.
        max_overhead: Time budget as a fraction of training time (see :class:`MonitorBase`).
        synchronous_logging: Render on the training thread (debugging).
        output: Where the ``[B, C]`` scores are when the model's forward returns a tuple, dict or
            dataclass: an index, a key/attribute name or a callable.

    Raises:
        TypeError, ValueError: bad arguments (here); at ``setup``: too few concept examples,
            concept examples whose shape the model cannot take, an unknown layer, a class index
            out of range.

    Example:
        >>> import torch
        >>> monitor = TCAVMonitor({"red": torch.rand(20, 3, 16, 16)}, layers="features.6", target_classes=[0], n_random=4)
        >>> monitor.layers, monitor.target_classes
        (['features.6'], [0])
    """

    def __init__(
        self,
        concepts: Mapping[str, Any],
        layers: Union[str, Sequence[str]],
        target_classes: Union[int, Sequence[int]],
        n_random: int = 10,
        image_mode: str = "RGB",
        image_size: Optional[int] = None,
        alpha: float = 0.05,
        random_examples: Any = None,
        random_size: Optional[int] = None,
        inputs: Any = None,
        num_inputs: int = 50,
        class_names: Optional[Sequence[str]] = None,
        relative: Optional[Sequence[Sequence[str]]] = None,
        classifier: str = "logistic",
        statistic: str = "effect",
        test: str = "prediction",
        batch_size: int = 64,
        seed: int = 0,
        log_embeddings: bool = True,
        every_n_epochs: int = 1,
        every_n_steps: Optional[int] = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
        output: OutputType = None,
    ) -> None:
        super().__init__(every_n_epochs, every_n_steps, max_overhead, synchronous_logging)
        if not isinstance(concepts, Mapping) or not concepts:
            raise TypeError(
                f"Expected argument `concepts` to be a non-empty mapping {{name: examples}}, but got {concepts!r}."
            )
        for name in concepts:
            if not isinstance(name, str) or not name or name == "random":
                raise ValueError(
                    f"Expected concept names to be non-empty strings other than 'random', but got {name!r}."
                )
        self.tcav = TCAV(
            layers,
            n_random=n_random,
            alpha=alpha,
            classifier=classifier,
            random_size=random_size,
            batch_size=batch_size,
            seed=seed,
            statistic=statistic,
            test=test,
            output=output,
        )
        self.output = output
        self.concept_sources = dict(concepts)
        if image_mode not in ("RGB", "L"):
            raise ValueError(f"Expected argument `image_mode` to be 'RGB' or 'L', but got {image_mode!r}.")
        self.image_mode = image_mode
        self.image_size = check_int("image_size", image_size, 1, allow_none=True)
        self.relative = check_relative(relative, list(concepts))
        self.layers = list(self.tcav.layers)
        self.target_classes = _classes_arg(target_classes)
        self.num_inputs = check_int("num_inputs", num_inputs, 2)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.random_examples = random_examples
        self.user_inputs = inputs
        self.seed = seed
        self.log_embeddings = bool(log_embeddings)
        self.history: list[dict[str, Any]] = []
        self._concepts: dict[str, Tensor] = {}
        self._randoms: list[Tensor] = []
        self._inputs: dict[int, Tensor] = {}
        self._warned: set[tuple[str, str]] = set()

    # -- identity and state --------------------------------------------------------------------
    @property
    def concept_names(self) -> list[str]:
        """The concept names, then the relative names, in the order of the results."""
        return [*self.concept_sources, *(relative_name(a, b) for a, b in self.relative)]

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {
            "concepts": tuple(self.concept_names),
            "layers": tuple(self.layers),
            "target_classes": tuple(self.target_classes),
            **super()._state_key_fields(),
        }

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["history"] = [dict(entry) for entry in self.history]
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = [dict(entry) for entry in state_dict.get("history", [])]

    def class_name(self, k: int) -> str:
        """The log name of class ``k``."""
        if self.class_names is not None and k < len(self.class_names):
            return self.class_names[k]
        return f"class_{k}"

    # -- setup ---------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        name = type(self).__name__
        self.tcav.check(pl_module)
        self._concepts = {}
        for concept, source in self.concept_sources.items():
            examples = load_examples(source, name=concept, mode=self.image_mode, image_size=self.image_size)
            check_set_size(examples.shape[0], concept, name)
            self._concepts[concept] = examples.detach().cpu()
        first_name, first = next(iter(self._concepts.items()))
        try:
            layer_activations(pl_module, first[:1], self.layers, method=name, what=f"the {first_name!r} examples")
        except ValueError as err:
            source = self.concept_sources[first_name]
            hint = (
                " It is an image folder: pass `image_mode='L'` (1 channel) or `image_mode='RGB'` (3 channels) and "
                "`image_size=` to match the model's input."
                if isinstance(source, (str, os.PathLike))
                else " Give examples of the model's input shape."
            )
            raise ValueError(
                f"{name}: concept {first_name!r} examples of shape {list(first.shape[1:])} do not fit the model: "
                f"{err}.{hint}"
            ) from err
        for concept, examples in self._concepts.items():
            if examples.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"{name}: concept {concept!r} examples have shape {list(examples.shape[1:])}, but {first_name!r} "
                    f"examples {list(first.shape[1:])}."
                )
        with observe(pl_module, output=self.output), torch.no_grad():
            classes = int(pl_module(first[:1].to(pl_module.device)).shape[-1])
        for k in self.target_classes:
            if k >= classes:
                raise ValueError(
                    f"{name}: target class {k} is out of range: the model has {classes} classes [0, {classes})."
                )
        if self.class_names is None:
            names = getattr(trainer.datamodule, "classes", None) if trainer.datamodule is not None else None
            if isinstance(names, Sequence) and not isinstance(names, str):
                self.class_names = [str(c) for c in names]
        with torch.random.fork_rng(devices=[]):  # reading dataloaders must not move training's RNG
            self._choose_inputs(trainer, classes)
            self._choose_randoms(trainer, max(e.shape[0] for e in self._concepts.values()))
        for i, r in enumerate(self._randoms):
            if r.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"{name}: random set {i} has shape {list(r.shape[1:])}, but the concepts {list(first.shape[1:])}."
                )

    def _source(self, trainer: pl.Trainer, train: bool) -> Any:
        loops = (
            [trainer.fit_loop._data_source]
            if train
            else [trainer.fit_loop.epoch_loop.val_loop._data_source, trainer.fit_loop._data_source]
        )
        for source in loops:  # private: no public accessor before the loops run (as ProbeMonitor)
            if source.is_defined():
                loader = _first_loader(source.dataloader())
                if loader is not None:
                    return loader
        return None

    def _choose_inputs(self, trainer: pl.Trainer, classes: int) -> None:
        name = type(self).__name__
        source = self.user_inputs if self.user_inputs is not None else self._source(trainer, train=False)
        if source is None:
            raise ValueError(
                f"{name}: found no validation or training dataloader for the class inputs; pass `inputs=(x, y)`."
            )
        scored = list(self.target_classes)
        if isinstance(source, (tuple, list)) and len(source) >= 2 and all(isinstance(t, Tensor) for t in source[:2]):
            (batch,) = list(_scored_batches([tuple(source[:2])], scored))
            filtered: Any = batch
        else:
            if isinstance(source, Dataset) and not isinstance(source, IterableDataset) and hasattr(source, "__len__"):
                source = DataLoader(
                    source, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(self.seed)
                )
            filtered = _scored_batches(source, scored)
        probe = select_probe(
            filtered, num_samples=self.num_inputs * len(scored), num_classes=len(scored), seed=self.seed
        )
        if probe.targets is None:
            raise ValueError(f"{name}: the class inputs need targets; pass `inputs=(x, y)`.")
        self._inputs = {}
        for i, k in enumerate(scored):
            chosen = probe.inputs[probe.targets == i][: self.num_inputs]
            if chosen.shape[0] < 2:
                raise ValueError(f"{name}: found {chosen.shape[0]} inputs of target class {k}; at least 2 are needed.")
            self._inputs[k] = chosen.detach().cpu()

    def _choose_randoms(self, trainer: pl.Trainer, size: int) -> None:
        pool = self.random_examples
        if pool is None:
            loader = self._source(trainer, train=True)
            pool = getattr(loader, "dataset", None)
            if pool is None:
                raise ValueError(
                    f"{type(self).__name__}: found no training dataset for random examples; pass `random_examples=`."
                )
        if isinstance(pool, DataLoader):
            pool = pool.dataset
        if isinstance(pool, (list, tuple)):
            self._randoms = [t.detach().cpu() for t in self.tcav.random_sets(pool, size)]
        elif isinstance(pool, (Tensor, Dataset)):
            self._randoms = [
                t.detach().cpu()
                for t in sample_examples(pool, self.tcav.n_random, self.tcav.random_size or size, seed=self.seed)
            ]
        else:
            raise TypeError(
                f"Expected argument `random_examples` to be a tensor, a Dataset, a DataLoader or a list of example sets, "
                f"but got {type(pool).__name__}."
            )

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fit two random runs of the first concept and score the first class on two inputs,
        then render into encode-only sinks."""
        tiny = TCAV(
            self.layers,
            n_random=2,
            batch_size=self.tcav.batch_size,
            seed=self.seed,
            statistic=self.tcav.statistic,
            test=self.tcav.test,
            output=self.output,
        )
        first = next(iter(self._concepts))
        k = self.target_classes[0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cavs = tiny.fit(pl_module, {first: self._concepts[first]}, self._randoms[:2])
            packed = self._pack(tiny.score(pl_module, self._inputs[k][:2], k, cavs), [first], 2).unsqueeze(0)
        if trainer.is_global_zero:
            self._dry_running = True
            try:
                self.render(
                    self.dry_run_sinks(),
                    self.run_info(trainer),
                    packed.cpu(),
                    {name: v.cpu() for name, v in cavs.vectors.items()},
                    [first],
                    [k],
                    history=[],
                )
            finally:
                self._dry_running = False

    # -- one run -------------------------------------------------------------------------------
    @staticmethod
    def _pack(result: Any, concepts: list[str], n: int) -> Tensor:
        """``[C, L, F]`` rows: the :data:`TCAV_FIELDS`, then the ``n`` scores and ``n`` random scores."""
        r = result
        head = torch.stack(
            [
                r.score,
                r.score_std,
                r.p_value,
                r.significant.double(),
                r.accuracy,
                r.separates.double(),
                r.random_scores.mean(2),
                r.random_scores.std(2),
                r.sign_count,
            ],
            dim=2,
        ).double()
        return torch.cat([head, r.scores.double(), r.random_scores.double()], dim=2)

    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        concepts = self.concept_names
        cavs = None
        if trainer.is_global_zero or trainer.world_size <= 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # near-chance CAVs are warned about once below, not every run
                cavs = self.tcav.fit(pl_module, self._concepts, self._randoms, self.relative)
        if trainer.world_size > 1:  # fitted once, on rank zero, and sent to the others
            if cavs is not None:
                cavs.vectors = {k: v.cpu() for k, v in cavs.vectors.items()}
            cavs = trainer.strategy.broadcast(cavs, src=0)
        n_classes = len(self.target_classes)
        mine = self.shard(trainer, n_classes).tolist()
        packed = torch.stack(
            [
                self._pack(
                    self.tcav.score(pl_module, self._inputs[self.target_classes[i]], self.target_classes[i], cavs),
                    concepts,
                    self.tcav.n_random,
                )
                for i in mine
            ]
        ).to(pl_module.device)
        packed = self.gather(trainer, packed, n_classes)  # [T, C, L, F]
        if not trainer.is_global_zero:
            return
        packed = packed.detach().double().cpu()
        for c, concept in enumerate(concepts):
            for li, layer in enumerate(self.layers):
                if packed[0, c, li, 5] == 0 and (concept, layer) not in self._warned:
                    self._warned.add((concept, layer))
                    self.warn(
                        f"the CAVs of concept {concept!r} at layer {layer!r} separate it from random examples with held-out "
                        f"accuracy {float(packed[0, c, li, 4]):.2f}, near chance: its TCAV scores mean little (marked "
                        "separates=False in the table)."
                    )
        info = self.run_info(trainer)
        self.history.append({"epoch": info.epoch, "step": info.step, "results": packed})
        history = list(self.history)
        vectors = {name: v.detach().float().cpu() for name, v in cavs.vectors.items()} if self.log_embeddings else {}
        classes = list(self.target_classes)
        self.publish(trainer, lambda sinks, info: self.render(sinks, info, packed, vectors, concepts, classes, history))

    def render(
        self,
        sinks: Sequence[Sink],
        info: RunInfo,
        packed: Tensor,
        vectors: Mapping[str, Tensor],
        concepts: list[str],
        classes: list[int],
        history: list[dict[str, Any]],
    ) -> None:
        """Log one run's packed ``[T, C, L, F]`` results (background thread, CPU tensors)."""
        from lightning_xai.render.plots import tcav_bar_chart, tcav_history_plot

        names = [self.class_name(k) for k in classes]
        statistic = self.tcav.statistic
        scalars: dict[str, float] = {}
        rows: list[list[Any]] = []
        for t, cls in enumerate(names):
            for c, concept in enumerate(concepts):
                for li, layer in enumerate(self.layers):
                    row = packed[t, c, li]
                    key = f"xai/tcav/{layer}/{concept}/{cls}"
                    scalars[f"{key}/score"] = float(row[0])
                    scalars[f"{key}/sign_count"] = float(row[8])
                    scalars[f"{key}/p_value"] = float(row[2])
                    scalars[f"{key}/significant"] = float(row[3])
                    scalars[f"{key}/cav_accuracy"] = float(row[4])
                    rows.append(
                        [
                            info.epoch,
                            cls,
                            concept,
                            layer,
                            statistic,
                            round(float(row[0]), 6),
                            round(float(row[1]), 6),
                            round(float(row[6]), 6),
                            round(float(row[7]), 6),
                            round(float(row[8]), 4),
                            float(row[2]),
                            bool(row[3]),
                            round(float(row[4]), 4),
                            bool(row[5]),
                        ]
                    )
        columns = [
            "epoch",
            "class",
            "concept",
            "layer",
            "statistic",
            "score",
            "std",
            "random_mean",
            "random_std",
            "sign_count",
            "p_value",
            "significant",
            "cav_accuracy",
            "separates",
        ]
        ylabel = {"effect": "score change along CAV", "cosine": "cos(CAV, gradient)"}.get(statistic, "TCAV score")
        images = {}
        for li, layer in enumerate(self.layers):
            images[f"xai/tcav/{layer}/summary"] = tcav_bar_chart(
                packed[:, :, li, 0],
                packed[:, :, li, 1],
                packed[:, :, li, 3] > 0,
                names,
                concepts,
                title=f"TCAV ({statistic}) at {layer}, epoch {info.epoch}",
                random_means=packed[:, :, li, 6],
                random_stds=packed[:, :, li, 7],
                ylabel=ylabel,
                chance=0.5 if statistic in ("sign", "magnitude") else 0.0,
            )
            if history:
                epochs = [int(h["epoch"]) for h in history]
                curves, sig = {}, {}
                for t, cls in enumerate(names):
                    for c, concept in enumerate(concepts):
                        label = f"{concept} -> {cls}"
                        curves[label] = torch.stack([h["results"][t, c, li, 0] for h in history])
                        sig[label] = torch.stack([h["results"][t, c, li, 3] > 0 for h in history])
                mean = torch.stack([h["results"][0, 0, li, 6] for h in history])
                sd = torch.stack([h["results"][0, 0, li, 7] for h in history])
                images[f"xai/tcav/{layer}/history"] = tcav_history_plot(
                    epochs,
                    curves,
                    sig,
                    title=f"TCAV ({statistic}) at {layer}",
                    band=(mean - sd, mean + sd),
                    ylabel=ylabel,
                )
        for sink in sinks:
            sink.log_scalars(scalars, info.step)
            for tag, image in images.items():
                sink.log_image(tag, image, info.step)
            sink.log_table("xai/tcav/table", columns, rows, info.step)
            for layer, v in vectors.items():
                n = v.shape[1]
                labels = [concept for concept in concepts for _ in range(n)] + ["random"] * n
                sink.log_embedding(f"xai/tcav/{layer}/cavs", v.reshape(-1, v.shape[-1]), info.step, labels=labels)


def tcav_demo_monitor(
    image_size: int = 48,
    num_classes: int = 4,
    shortcut_class: int = 0,
    layers: Union[str, Sequence[str]] = "features.6",
    num_per_concept: int = 50,
    n_random: int = 10,
    every_n_epochs: int = 1,
    every_n_steps: Optional[int] = None,
    seed: int = 0,
    max_overhead: Optional[float] = None,
) -> TCAVMonitor:
    """The ``TCAVMonitor`` for the shortcut demo (:class:`~lightning_xai.demo.ShapesClassifier` on
    ``ShapesDataModule(shortcut=True)``): is the class learned from its corner marker or its shape?

    Two concepts for ``shortcut_class``: its marker (``"marker_<shape>"``: the marker on random
    shapes) and its shape (``"<shape>"``), against random shapes without a marker, and the
    relative CAV ``"marker_<shape>-vs-<shape>"`` (marker against shape directly), with the
    default ``"effect"`` statistic. Measured over the demo's 6 epochs (48 px, 12,288 shortcut
    images, class 0 = square, ``features.6``): the marker's effect 1.0-2.3 (p <= 0.044 every
    epoch), the shape's 2.1-3.0 (p <= 3e-4), marker-vs-shape -1.4 to -1.8 (p <= 0.03): the
    marker drives the class though validation images carry none, and the square's shape
    more. The paper's sign count is 1.0 for both concepts at every epoch.

    Example:
        >>> monitor = tcav_demo_monitor(image_size=16, num_classes=3, num_per_concept=8, n_random=3)
        >>> monitor.concept_names, monitor.target_classes
        (['marker_square', 'square', 'marker_square-vs-square'], [0])
    """
    from lightning_xai.data import SHAPE_NAMES, concept_sets, random_images

    shape = SHAPE_NAMES[check_int("shortcut_class", shortcut_class, 0, num_classes - 1)]
    sets = concept_sets(
        num_per_concept,
        image_size=image_size,
        num_classes=num_classes,
        concepts=[f"marker_{shape}", shape],
        seed=seed + 100,
    )
    pool = random_images(num_per_concept * n_random, image_size=image_size, num_classes=num_classes, seed=seed + 7)
    return TCAVMonitor(
        concepts={name: s.images for name, s in sets.items()},
        layers=layers,
        target_classes=[shortcut_class],
        relative=[(f"marker_{shape}", shape)],
        n_random=n_random,
        random_examples=pool,
        random_size=num_per_concept,
        every_n_epochs=every_n_epochs,
        every_n_steps=every_n_steps,
        seed=seed,
        max_overhead=max_overhead,
    )
