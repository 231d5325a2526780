"""``DissectionMonitor``: watch concept detector units emerge during training (Bau et al. 2017)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override

from lightning_xai._validation import check_int
from lightning_xai.callbacks.base import MonitorBase, RunInfo
from lightning_xai.concepts import NetworkDissection
from lightning_xai.concepts.dissection import DissectionResult, OwnedMasks, merge_top
from lightning_xai.concepts.functional import layer_activations
from lightning_xai.sinks import Sink

__all__ = ["DissectionMonitor"]


def _concept_pair(name: str, value: Any) -> tuple[Tensor, Tensor]:
    images = getattr(value, "images", None)
    masks = getattr(value, "masks", None)
    if images is None and isinstance(value, (tuple, list)) and len(value) == 2:
        images, masks = value
    if not isinstance(images, Tensor) or not isinstance(masks, Tensor):
        raise TypeError(
            f"Expected concept {name!r} to be (images, masks) tensors or a ConceptSet, but got {type(value).__name__}."
        )
    if masks.ndim == 3:
        masks = masks.unsqueeze(1)
    if images.ndim != 4 or masks.ndim != 4 or masks.shape[0] != images.shape[0] or masks.shape[1] != 1:
        raise ValueError(
            f"Expected concept {name!r} as images [N, C, H, W] with masks [N, 1, H, W], but got "
            f"{tuple(images.shape)} and {tuple(masks.shape)}."
        )
    return images.detach().float().cpu(), masks.detach().cpu() != 0


class DissectionMonitor(MonitorBase):
    """Network Dissection of one layer every few epochs: how many units detect each concept.

    The probe data is the union of the concept sets (Broden-style): each concept brings images
    with its pixel masks; an image counts as background for the other concepts. Each run computes
    the per-unit thresholds (exact top quantile, streamed) and the IoUs of
    :class:`~lightning_xai.concepts.NetworkDissection`, and logs:

    * scalars ``dissection/<layer>/interpretable_units`` and ``dissection/<layer>/detectors/<concept>``;
    * ``dissection/<layer>/detectors``: detector counts per concept over the runs so far;
    * ``dissection/<layer>/top_units``: the ``top_units`` best units, each on two images of its
      concept: the concept mask (left) and the unit's thresholded map (right), captioned with
      the IoU.

    The images stay on the CPU and go to the device a batch at a time; each image keeps only its
    own concept's mask (:class:`~lightning_xai.concepts.dissection.OwnedMasks`, ``[N, H, W]``).
    The history (per-unit IoUs of every run) is kept in ``state_dict``. Under DDP the images are
    split over the ranks; the top-value buffers are merged and the pixel counts summed, which
    gives exactly the single-process result. Training is never perturbed.

    Args:
        layer: Dotted name of a layer returning ``[B, K, h, w]`` maps.
        concepts: ``{name: ConceptSet or (images [N, C, H, W], masks [N, 1, H, W])}``, e.g.
            :func:`~lightning_xai.data.concept_sets`'s output.
        quantile: Top quantile of each unit's activations that counts as active (paper: 0.005).
        iou_threshold: IoU above which a unit is a detector (paper: 0.04).
        top_units: Units shown in the picture.
        batch_size: Images per forward pass.
        every_n_epochs: Run every n epochs.
        every_n_train_steps: Run every n training steps instead.
        max_overhead: Time budget as a fraction of training time.
        synchronous_logging: Render on the training thread (debugging).

    Examples:
        >>> import torch
        >>> concepts = {"blob": (torch.rand(6, 3, 16, 16), torch.rand(6, 1, 16, 16) > 0.5)}
        >>> DissectionMonitor(concepts, layer="features.6").concept_names
        ['blob']
    """

    def __init__(
        self,
        concepts: Mapping[str, Any],
        *,
        layer: str,
        quantile: float = 0.005,
        iou_threshold: float = 0.04,
        top_units: int = 4,
        batch_size: int = 64,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        super().__init__(
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        self.dissection = NetworkDissection(
            layer, quantile=quantile, iou_threshold=iou_threshold, batch_size=batch_size
        )
        self.layer = layer
        if not isinstance(concepts, Mapping) or not concepts:
            raise TypeError(
                f"Expected argument `concepts` to be a non-empty mapping {{name: (images, masks)}}, but got {concepts!r}."
            )
        pairs = {str(name): _concept_pair(str(name), value) for name, value in concepts.items()}
        shapes = {name: (tuple(i.shape[1:]), tuple(m.shape[2:])) for name, (i, m) in pairs.items()}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"Expected every concept's images and masks to have one shape, but got {shapes}.")
        self.concept_names = list(pairs)
        self._images = torch.cat([i for i, _ in pairs.values()])  # on the CPU; batches go to the device
        owner = torch.cat([torch.full((i.shape[0],), c, dtype=torch.long) for c, (i, _) in enumerate(pairs.values())])
        self._masks = OwnedMasks(torch.cat([m[:, 0] for _, m in pairs.values()]), owner, len(pairs))
        self._owner = owner  # which concept set each image came from
        self.top_units = check_int("top_units", top_units, 0)
        self.history: list[dict[str, Any]] = []

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {"layer": self.layer, "concepts": tuple(self.concept_names), **super()._state_key_fields()}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["history"] = [dict(entry) for entry in self.history]
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.history = [dict(entry) for entry in state_dict.get("history", [])]

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.dissection.check(pl_module)
        act = layer_activations(
            pl_module,
            self._images[:1],
            self.layer,
            flatten=False,
            method=type(self).__name__,
            what="the concept images",
        )[self.layer]
        if act.ndim != 4:
            raise ValueError(
                f"{type(self).__name__}: layer {self.layer!r} returns shape {tuple(act.shape)}; dissection needs [B, K, h, w] maps."
            )

    def _dissect(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, images: Tensor, masks: OwnedMasks
    ) -> DissectionResult:
        n = images.shape[0]
        world = trainer.world_size
        rows = self.shard(trainer, n) if world > 1 else None
        if rows is not None:  # the padding repeats row n - 1: drop it, so every image counts once
            rows = torch.unique(rows)
        top = self.dissection.top_values(pl_module, images, total_images=n, indices=rows)
        if world > 1:
            # a rank holding fewer than ceil(q * n * h * w) values has a narrower buffer: pad it with
            # -inf (never among the merged top values, since all ranks together hold enough)
            width = torch.tensor([top.shape[1]], device=top.device)
            widths = trainer.strategy.all_gather(width).flatten()
            pad = int(widths.max()) - top.shape[1]
            if pad:
                filler = torch.full((top.shape[0], pad), -float("inf"), device=top.device, dtype=top.dtype)
                top = torch.cat([top[:, :-1], filler, top[:, -1:]], dim=1)
            tops = trainer.strategy.all_gather(top)
            keep = self.dissection.keep_count(
                n, tuple(layer_activations(pl_module, images[:1], self.layer, flatten=False)[self.layer].shape[-2:])
            )
            top = merge_top(list(tops), keep)
        thresholds = self.dissection.threshold_from_top(top)
        inter, unit_area, concept_area = self.dissection.counts(pl_module, images, masks, thresholds, indices=rows)
        if world > 1:
            inter = trainer.strategy.all_gather(inter).sum(0)
            unit_area = trainer.strategy.all_gather(unit_area).sum(0)
            concept_area = trainer.strategy.all_gather(concept_area).sum(0)
        return DissectionResult(
            layer=self.layer,
            concepts=list(self.concept_names),
            thresholds=thresholds.cpu(),
            iou=self.dissection.iou(inter, unit_area, concept_area).cpu(),
            iou_threshold=self.dissection.iou_threshold,
        )

    def _examples(
        self, pl_module: pl.LightningModule, result: DissectionResult
    ) -> tuple[Tensor, Tensor, Tensor, list[str]]:
        """Two images per top unit: (images, concept masks, the unit's active regions, captions)."""
        order = result.best_iou.argsort(descending=True)[: self.top_units].tolist()
        picks, units, captions = [], [], []
        for unit in order:
            c = int(result.best_concept[unit])
            idx = (self._owner == c).nonzero().flatten()[:2].tolist()
            for i in idx:
                picks.append(i)
                units.append(unit)
                captions.append(f"unit {unit}: {result.concepts[c]}\nIoU {float(result.iou[unit, c]):.2f}")
        if not picks:
            empty = torch.zeros(0, 3, *self._images.shape[-2:])
            return empty, empty[:, :1], empty[:, :1], []
        index = torch.tensor(picks)
        images = self._images[index.to(self._images.device)]
        act = layer_activations(pl_module, images, self.layer, flatten=False)[self.layer].float()
        up = F.interpolate(act, size=images.shape[-2:], mode="bilinear", align_corners=False)
        unit_index = torch.tensor(units, device=up.device)
        maps = up[torch.arange(len(units), device=up.device), unit_index]
        active = maps >= result.thresholds.to(maps.device)[unit_index].view(-1, 1, 1)
        masks = self._masks.masks[index]
        return images.float().cpu(), masks.unsqueeze(1).float(), active.unsqueeze(1).float().cpu(), captions

    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = self._dissect(trainer, pl_module, self._images, self._masks)
        if not trainer.is_global_zero:
            return
        info = self.run_info(trainer)
        self.history.append(
            {"epoch": info.epoch, "step": info.step, "iou": result.iou.clone(), "thresholds": result.thresholds.clone()}
        )
        examples = self._examples(pl_module, result) if self.top_units else None
        history = list(self.history)
        self.publish(trainer, lambda sinks, info: self.render(sinks, info, result, examples, history))

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Dissect on four images and render into encode-only sinks."""
        sub = torch.arange(min(4, self._images.shape[0]))
        result = DissectionResult(
            self.layer, list(self.concept_names), *self._tiny(pl_module, sub), self.dissection.iou_threshold
        )
        if trainer.is_global_zero:
            self._dry_running = True
            try:
                self.render(self.dry_run_sinks(), self.run_info(trainer), result, self._examples(pl_module, result), [])
            finally:
                self._dry_running = False

    def _tiny(self, pl_module: pl.LightningModule, rows: Tensor) -> tuple[Tensor, Tensor]:
        images = self._images[rows.to(self._images.device)]
        masks = OwnedMasks(self._masks.masks[rows], self._owner[rows], self._masks.num_concepts)
        thresholds = self.dissection.thresholds(pl_module, images)
        inter, unit_area, concept_area = self.dissection.counts(pl_module, images, masks, thresholds)
        return thresholds.cpu(), self.dissection.iou(inter, unit_area, concept_area).cpu()

    def render(
        self,
        sinks: Sequence[Sink],
        info: RunInfo,
        result: DissectionResult,
        examples: Optional[tuple[Tensor, Tensor, Tensor, list[str]]],
        history: list[dict[str, Any]],
    ) -> None:
        """Log one run's dissection (background thread, CPU tensors)."""
        from lightning_xai.render import annotated_grid, overlay
        from lightning_xai.render.plots import detector_count_plot

        detectors = result.detectors()
        scalars = {f"xai/dissection/{self.layer}/interpretable_units": float(result.num_interpretable)}
        scalars.update({f"xai/dissection/{self.layer}/detectors/{c}": float(v) for c, v in detectors.items()})
        images: dict[str, Tensor] = {}
        if history:
            counts: dict[str, list[int]] = {c: [] for c in result.concepts}
            for h in history:
                past = DissectionResult(self.layer, result.concepts, h["thresholds"], h["iou"], result.iou_threshold)
                for c, v in past.detectors().items():
                    counts[c].append(v)
            images[f"xai/dissection/{self.layer}/detectors"] = detector_count_plot(
                [int(h["epoch"]) for h in history], counts, title=f"Detector units at {self.layer}"
            )
        if examples is not None and examples[3]:
            imgs, masks, active, captions = examples
            tiles = torch.stack(
                [overlay(imgs, masks, signed=False), overlay(imgs, active, signed=False)], dim=1
            ).flatten(0, 1)
            tile_captions = [text for caption in captions for text in ("mask\n" + caption.split("\n")[0], caption)]
            images[f"xai/dissection/{self.layer}/top_units"] = annotated_grid(
                tiles,
                tile_captions,
                ncols=4,
                title=f"{self.layer}, epoch {info.epoch}: concept mask | unit's active region",
            )
        for sink in sinks:
            sink.log_scalars(scalars, info.step)
            for tag, image in images.items():
                sink.log_image(tag, image, info.step)
