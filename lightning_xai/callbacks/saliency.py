"""``SaliencyMonitor``: watch a model's saliency maps evolve, epoch by epoch."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution.base import Explainer, get_explainer, observe
from lightning_xai.callbacks.base import XAIMonitor
from lightning_xai.data.probe import Probe
from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics.functional.maps import map_entropy, map_ssim, mask_share
from lightning_xai.render import (
    annotated_grid,
    evolution_strip,
    normalize_maps,
    overlay,
    reduce_channels,
    save_png,
    to_display,
)
from lightning_xai.render.sinks import Sink

__all__ = ["SaliencyMonitor"]

ExplainerSpec = Union[Explainer, str]


def _default_explainers() -> list[Explainer]:
    from lightning_xai.attribution import GradCAM, IntegratedGradients

    return [GradCAM(), IntegratedGradients(n_steps=16)]


class SaliencyMonitor(XAIMonitor):
    """Compute saliency maps on a fixed probe set during training and log them to every logger.

    Per explainer and run it logs, to each logger the Trainer has (TensorBoard, W&B, others as
    PNG files + scalars):

    * ``xai/<name>/overlays``: a grid of heatmap overlays captioned with the true and predicted
      label and the predicted probability;
    * ``xai/<name>/evolution/<i>``: probe image *i*'s map across the runs so far, side by side;
    * scalars ``xai/<name>/entropy`` (how spread the map is), ``xai/<name>/mask_share`` (share of
      attribution inside the ground-truth mask, when the data has masks), ``xai/<name>/ssim_prev``
      (SSIM to the previous run's maps: has the explanation settled?) and ``xai/<name>/nonfinite``
      (1 when the maps held NaN/inf and were skipped);
    * a histogram of the attribution values, and (W&B) a table of probe images x explainers.

    Training is never perturbed: every computation runs inside
    :func:`~lightning_xai.attribution.observe` (modes, ``requires_grad``, ``.grad``, BatchNorm
    statistics and RNG state restored), so a seeded run ends with bitwise-identical weights with
    or without the monitor. Under DDP the probe set is split across ranks and gathered; rank zero
    logs.

    Args:
        explainers: Explainer objects, or registry names (``"grad_cam"``), to run. Default:
            ``[GradCAM(), IntegratedGradients(n_steps=16)]``.
        num_samples: Probe-set size (class-balanced, chosen once at ``setup``).
        every_n_epochs: Run every n epochs.
        every_n_steps: Run every n training steps instead.
        target: ``"predicted"`` (explain the predicted class) or ``"label"`` (the true class).
        class_names: Names for the class indices in captions (default: the datamodule's or
            dataset's ``classes`` attribute, else the indices).
        max_history: Most runs shown in an evolution strip (older runs are thinned out evenly).
        overlay_alpha: Opacity of the heatmap over the image.
        clip_percentile: Percentile of each map's values shown at full colour (larger values
            saturate), so sparse pixel maps stay visible; 100 scales by the maximum.
        log_evolution: Log the per-probe evolution strips.
        log_histograms: Log histograms of attribution values.
        seed: Seed of the probe selection: the order in which a Dataset or tensors are read, or the
            shuffling of a shuffled DataLoader (an unshuffled loader is read in its own order).
        probe: Optional user probe ``(inputs[, targets[, masks]])``, Dataset or DataLoader.

    Example:
        >>> from lightning_xai.attribution import GradCAM, IntegratedGradients
        >>> monitor = SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=16)], num_samples=8)
        >>> # trainer = pl.Trainer(callbacks=[monitor]); trainer.fit(model, datamodule)
    """

    def __init__(
        self,
        explainers: Optional[Sequence[ExplainerSpec]] = None,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        every_n_steps: Optional[int] = None,
        target: str = "predicted",
        class_names: Optional[list[str]] = None,
        max_history: int = 16,
        overlay_alpha: float = 0.5,
        clip_percentile: float = 99.0,
        log_evolution: bool = True,
        log_histograms: bool = True,
        seed: int = 0,
        probe: Optional[Any] = None,
    ) -> None:
        super().__init__(
            num_samples=num_samples, every_n_epochs=every_n_epochs, every_n_steps=every_n_steps, seed=seed, probe=probe
        )
        if target not in ("predicted", "label"):
            raise ValueError(f"Expected argument `target` to be 'predicted' or 'label', but got {target!r}.")
        if not 0.0 <= overlay_alpha <= 1.0:
            raise ValueError(
                f"Expected argument `overlay_alpha` to be a float in the [0,1] range, but got {overlay_alpha}."
            )
        if not 0.0 < clip_percentile <= 100.0:
            raise ValueError(
                f"Expected argument `clip_percentile` to be a float in the (0,100] range, but got {clip_percentile}."
            )
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 2:
            raise ValueError(f"Expected argument `max_history` to be an int >= 2, but got {max_history!r}.")
        resolved = _default_explainers() if explainers is None else [self._resolve(e) for e in explainers]
        if not resolved:
            raise ValueError("Expected argument `explainers` to hold at least one explainer, but got an empty list.")
        self.explainers: list[Explainer] = resolved
        self.names = self._unique_names(resolved)
        self.target = target
        self.class_names = list(class_names) if class_names is not None else None
        self.max_history = max_history
        self.overlay_alpha = overlay_alpha
        self.clip_percentile = clip_percentile
        self.log_evolution = log_evolution
        self.log_histograms = log_histograms
        self._history: dict[str, list[tuple[int, Tensor, Tensor]]] = {name: [] for name in self.names}
        self._previous: dict[str, Tensor] = {}

    @staticmethod
    def _resolve(spec: ExplainerSpec) -> Explainer:
        if isinstance(spec, Explainer):
            return spec
        if isinstance(spec, str):
            return get_explainer(spec)
        raise TypeError(
            f"Expected each explainer to be an Explainer or a registered name, but got {type(spec).__name__}."
        )

    @staticmethod
    def _unique_names(explainers: Sequence[Explainer]) -> list[str]:
        names: list[str] = []
        for e in explainers:
            base = e.registry_name or type(e).__name__.lower()
            name, k = base, 2
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.append(name)
        return names

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "explainers": [repr(e) for e in self.explainers], "target": self.target}

    # -- configuration checks ------------------------------------------------------------------
    @override
    def check(self, pl_module: pl.LightningModule) -> None:
        for explainer in self.explainers:
            explainer.check(pl_module)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if self.target == "label" and self.probe is not None and self.probe.targets is None:
            raise ValueError("SaliencyMonitor(target='label') needs labels, but the probe set has none.")
        if self.class_names is None:
            self.class_names = self._find_class_names(trainer)

    @staticmethod
    def _find_class_names(trainer: pl.Trainer) -> Optional[list[str]]:
        for owner in (trainer.datamodule, getattr(trainer.datamodule, "val_dataset", None)):
            names = getattr(owner, "classes", None)
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                return list(names)
        return None

    @override
    def dry_run(self, pl_module: pl.LightningModule) -> None:
        assert self.probe is not None
        sample = self.probe[:1]
        for name, explainer in zip(self.names, self.explainers):
            try:
                explainer(pl_module, sample.inputs, self._targets(sample))
            except (LightningXAIError, RuntimeError) as err:
                raise ValueError(
                    f"SaliencyMonitor: explainer {name!r} ({explainer!r}) fails on a probe input of shape "
                    f"{tuple(sample.inputs.shape)}: {err}"
                ) from err

    # -- computation (every rank, its shard) ---------------------------------------------------
    def _targets(self, probe: Probe) -> Optional[Tensor]:
        return probe.targets if self.target == "label" else None

    @override
    def compute(self, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        with observe(pl_module), torch.no_grad():
            probs = torch.softmax(pl_module(probe.inputs).float(), dim=1)
        results: dict[str, Tensor] = {"probs": probs}
        target = self._targets(probe)
        if target is None:
            target = probs.argmax(dim=1)
        for name, explainer in zip(self.names, self.explainers):
            try:
                maps = explainer(pl_module, probe.inputs, target)
            except LightningXAIError as err:
                self._warn(f"explainer {name!r} failed and is skipped this time: {err}")
                maps = torch.full((len(probe), 1, *probe.inputs.shape[-2:]), float("nan"), device=probe.inputs.device)
            if maps.shape[1] != 1:
                maps = reduce_channels(maps, signed=explainer.signed)
            results[name] = maps.float()
        return results

    # -- rendering (rank zero) -----------------------------------------------------------------
    def _class_name(self, index: int) -> str:
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def _captions(self, probe: Probe, probs: Tensor) -> list[str]:
        conf, pred = probs.max(dim=1)
        captions = []
        for i in range(len(probe)):
            true = self._class_name(int(probe.targets[i])) if probe.targets is not None else "?"
            captions.append(f"true: {true}\npred: {self._class_name(int(pred[i]))} ({float(conf[i]):.2f})")
        return captions

    @override
    def publish(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        probe: Probe,
        results: dict[str, Tensor],
        sinks: list[Sink],
    ) -> None:
        step, epoch = trainer.global_step, trainer.current_epoch
        images = to_display(probe.inputs.float()).cpu()
        captions = self._captions(probe, results["probs"].cpu())
        scalars: dict[str, float] = {}
        table_maps: dict[str, Tensor] = {}
        for name, explainer in zip(self.names, self.explainers):
            maps = results[name].cpu()
            finite = bool(torch.isfinite(maps).all())
            scalars[f"xai/{name}/nonfinite"] = 0.0 if finite else 1.0
            if not finite:
                self._warn(f"explainer {name!r} produced NaN/inf maps at epoch {epoch} (step {step}); skipped.")
                continue
            signed = bool(explainer.signed and maps.min() < 0)
            normalized = normalize_maps(maps, signed=signed, clip_percentile=self.clip_percentile)
            overlays = overlay(images, normalized, signed=signed, alpha=self.overlay_alpha)
            table_maps[name] = overlays
            grid = annotated_grid(overlays, captions, ncols=min(4, len(probe)), title=f"{name} - epoch {epoch}")
            for sink in sinks:
                sink.log_image(f"xai/{name}/overlays", grid, step, caption=f"{name}, epoch {epoch}")
            scalars[f"xai/{name}/entropy"] = float(map_entropy(maps))
            if probe.masks is not None:
                scalars[f"xai/{name}/mask_share"] = float(mask_share(maps, probe.masks.cpu()))
            previous = self._previous.get(name)
            if previous is not None and previous.shape == maps.shape:
                scalars[f"xai/{name}/ssim_prev"] = float(map_ssim(maps, previous))
            self._previous[name] = maps
            if self.log_histograms:
                for sink in sinks:
                    sink.log_histogram(f"xai/{name}/values", maps, step)
            if self.log_evolution:
                self._log_evolution(name, epoch, overlays, sinks, step)
        for sink in sinks:
            sink.log_scalars(scalars, step)
        if table_maps:
            self._log_table(images, captions, table_maps, sinks, step)

    def _log_evolution(self, name: str, epoch: int, overlays: Tensor, sinks: list[Sink], step: int) -> None:
        # Each run's frames are captioned once, as cells; a strip is then a concatenation of cells,
        # so re-logging the growing strips every run costs little more than their PNG encoding.
        scale = self._strip_scale(overlays)
        cells = torch.stack(
            [annotated_grid(frame[None], [f"epoch {epoch}"], ncols=1, scale=scale) for frame in overlays]
        )
        history = self._history[name]
        history.append((epoch, overlays, cells))
        if len(history) > self.max_history:  # thin out evenly, always keeping the first and the newest
            keep = torch.linspace(0, len(history) - 1, self.max_history).round().long().unique().tolist()
            history[:] = [history[i] for i in keep]
        for i in range(overlays.shape[0]):
            strip = torch.cat([run_cells[i] for _, _, run_cells in history], dim=-1)
            for sink in sinks:
                sink.log_image(f"xai/{name}/evolution/{i:02d}", strip, step, caption=f"probe {i}: {name} over epochs")

    @staticmethod
    def _strip_scale(overlays: Tensor) -> int:
        """Upscaling of strip frames to at least 48 pixels: strips are many and are re-logged every
        run (their PNG encoding is most of a run's cost), so they stay small; the overview grid
        shows the same maps large."""
        return max(1, math.ceil(48 / max(overlays.shape[-2:])))

    def history(self, name: Optional[str] = None) -> list[tuple[int, Tensor]]:
        """The overlays logged so far for explainer ``name`` (default: the first) as
        ``[(epoch, overlays [N, 3, H, W]), ...]`` (thinned to ``max_history``; rank zero only)."""
        return [(epoch, overlays) for epoch, overlays, _ in self._history[name or self.names[0]]]

    def save_evolution_png(
        self, path: Union[str, os.PathLike[str]], name: Optional[str] = None, max_images: int = 4
    ) -> None:
        """Write one PNG: a row per probe image (up to ``max_images``), a column per run."""
        history = self.history(name)
        if not history:
            raise ValueError(f"SaliencyMonitor: nothing logged yet for {name or self.names[0]!r}.")
        labels = [f"epoch {e}" for e, _ in history]
        rows = [
            evolution_strip([frames[i] for _, frames in history], labels)
            for i in range(min(max_images, history[0][1].shape[0]))
        ]
        width = max(r.shape[-1] for r in rows)
        rows = [torch.nn.functional.pad(r, (0, width - r.shape[-1]), value=1.0) for r in rows]
        save_png(torch.cat(rows, dim=1), path)

    def _log_table(
        self, images: Tensor, captions: list[str], maps: dict[str, Tensor], sinks: list[Sink], step: int
    ) -> None:
        columns = ["probe", "label", "input", *maps]
        rows = [
            [i, captions[i].replace("\n", ", "), images[i], *(m[i] for m in maps.values())]
            for i in range(images.shape[0])
        ]
        for sink in sinks:
            sink.log_table("xai/probe_table", columns, rows, step)
