"""``SaliencyMonitor``: watch a model's saliency maps evolve, epoch by epoch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
from torch import Tensor
from typing_extensions import override

from lightning_xai.attribution.base import Explainer, OutputType, get_explainer, observe
from lightning_xai.callbacks.base import ProbeMonitor, RunInfo
from lightning_xai.data.probe import Probe
from lightning_xai.errors import LightningXAIError
from lightning_xai.render import evolution_strip, reduce_channels, save_png
from lightning_xai.render.saliency import SaliencyRenderer
from lightning_xai.sinks import Sink

__all__ = ["SaliencyMonitor"]

ExplainerSpec = Union[Explainer, str]


def _default_explainers() -> list[Explainer]:
    from lightning_xai.attribution import GradCAM, IntegratedGradients

    return [GradCAM(), IntegratedGradients(n_steps=16)]


class SaliencyMonitor(ProbeMonitor):
    """Compute saliency maps on a fixed probe set during training and log them to every logger.

    Per explainer and run it logs, to each logger the Trainer has (TensorBoard, W&B, others as
    PNG files + scalars):

    * ``xai/<name>/overlays``: a grid of heatmap overlays captioned with the true and predicted
      label and the predicted probability;
    * ``xai/<name>/evolution/<i>``: probe image *i*'s map across the runs so far, side by side;
    * scalars ``xai/<name>/entropy`` (how spread the map is), ``xai/<name>/mask_share`` (share of
      attribution inside the ground-truth mask, when the data has masks), ``xai/<name>/ssim_prev``
      (SSIM to the previous run's maps: has the explanation settled?) and ``xai/<name>/nonfinite``
      (how many probes' maps held NaN/inf: their cells are left blank, the other probes' maps are logged);
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
        every_n_train_steps: Run every n training steps instead.
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
        names: One name per explainer for the log keys (default: registry names; two explainers
            of one class with different layers become ``grad_cam@layer3`` and ``grad_cam@layer4``).
        output: How to pick the ``[B, C]`` scores when the model's forward returns a tuple, dict or
            dataclass: an int index, a str key/attribute, or a callable ``raw -> scores``.
        max_overhead: Time budget as a fraction of training time (``0.05``); runs are skipped, and
            the skip logged, to keep within it. ``None``: always run on schedule.
        synchronous_logging: Render and write on the training thread instead of the background
            writer (debugging).

    Inputs need not be images: flat feature vectors ``[B, D]`` and sequences ``[B, C, L]`` are
    drawn as heat strips. Rendering happens on a background thread on rank zero, so training does
    not wait for PNG encoding; it is flushed at the end of fit, at checkpoint saves and on errors.

    Examples:
        >>> from lightning_xai.attribution import GradCAM, IntegratedGradients
        >>> monitor = SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=16)], num_samples=8)
        >>> # trainer = pl.Trainer(callbacks=[monitor]); trainer.fit(model, datamodule)
    """

    def __init__(
        self,
        explainers: Optional[Sequence[ExplainerSpec]] = None,
        *,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        target: str = "predicted",
        class_names: Optional[list[str]] = None,
        names: Optional[list[str]] = None,
        max_history: int = 16,
        overlay_alpha: float = 0.5,
        clip_percentile: float = 99.0,
        log_evolution: bool = True,
        log_histograms: bool = True,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
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
        self.names = self._check_names(names, resolved) if names is not None else self._unique_names(resolved)
        self.target = target
        self.class_names = list(class_names) if class_names is not None else None
        self.max_history = max_history
        self.overlay_alpha = overlay_alpha
        self.clip_percentile = clip_percentile
        self.log_evolution = log_evolution
        self.log_histograms = log_histograms
        self.renderer = self._make_renderer()

    def _make_renderer(self) -> SaliencyRenderer:
        return SaliencyRenderer(
            self.names,
            [e.signed for e in self.explainers],
            class_names=self.class_names,
            max_history=self.max_history,
            overlay_alpha=self.overlay_alpha,
            clip_percentile=self.clip_percentile,
            log_evolution=self.log_evolution,
            log_histograms=self.log_histograms,
            warn=self.warn,
        )

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
    def _check_names(names: Sequence[str], explainers: Sequence[Explainer]) -> list[str]:
        if len(names) != len(explainers) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(
                f"Expected argument `names` to hold one non-empty str per explainer ({len(explainers)}), but got {names!r}."
            )
        if len(set(names)) != len(names):
            raise ValueError(f"Expected argument `names` to hold distinct names, but got {names!r}.")
        return list(names)

    @staticmethod
    def _unique_names(explainers: Sequence[Explainer]) -> list[str]:
        """Registry names; an explainer configured with a ``layer`` gets it appended when two
        explainers of one class would otherwise share a name (``grad_cam@layer3``)."""
        bases = [e.registry_name or type(e).__name__.lower() for e in explainers]
        names: list[str] = []
        for e, base in zip(explainers, bases):
            layer = getattr(e, "layer", None)
            if bases.count(base) > 1 and isinstance(layer, str):
                base = f"{base}@{layer}"
            name, k = base, 2
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.append(name)
        return names

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "explainers": [repr(e) for e in self.explainers], "target": self.target}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # flushes the background writer first
        state["renderer"] = self.renderer.state_dict()
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.renderer.load_state_dict(state_dict.get("renderer", {}))

    # -- configuration checks ------------------------------------------------------------------
    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.target == "label" and self.probe is not None and self.probe.targets is None:
            raise ValueError("SaliencyMonitor(target='label') needs labels, but the probe set has none.")
        if self.probe is not None and not 2 <= self.probe.inputs.ndim <= 4:
            raise ValueError(
                f"SaliencyMonitor renders inputs of shape [B, D], [B, C, L] or [B, C, H, W]; the probe inputs have "
                f"shape {tuple(self.probe.inputs.shape)}."
            )
        for explainer in self.explainers:
            explainer.check(pl_module)
        if self.class_names is None:
            self.class_names = self._find_class_names(trainer)
            self.renderer.class_names = self.class_names

    @staticmethod
    def _find_class_names(trainer: pl.Trainer) -> Optional[list[str]]:
        datamodule = getattr(trainer, "datamodule", None)
        for owner in (datamodule, getattr(datamodule, "val_dataset", None)):
            names = getattr(owner, "classes", None)
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                return list(names)
        return None

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            super().dry_run(trainer, pl_module)
        except torch.OutOfMemoryError:
            raise  # an OOM names its own knob (internal_batch_size); it is not a configuration error
        except (LightningXAIError, RuntimeError) as err:
            assert self.probe is not None
            raise ValueError(
                f"SaliencyMonitor fails on a probe input of shape {tuple(self.probe.inputs[:1].shape)} at fit start "
                f"(before training): {err}"
            ) from err

    # -- computation (every rank, its shard) ---------------------------------------------------
    def _targets(self, probe: Probe) -> Optional[Tensor]:
        return probe.targets if self.target == "label" else None

    def _call_kwargs(self) -> dict[str, Any]:
        return {} if self.output is None else {"output": self.output}

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        from lightning_xai.attribution.base import select_output

        with observe(pl_module), torch.no_grad():
            outputs = select_output(pl_module(probe.inputs), self.output)
            probs = torch.softmax(outputs.float(), dim=1)
        results: dict[str, Tensor] = {"probs": probs}
        target = self._targets(probe)
        if target is None:
            target = probs.argmax(dim=1)
        for name, explainer in zip(self.names, self.explainers):
            try:
                maps = explainer(pl_module, probe.inputs, target, **self._call_kwargs())
            except torch.OutOfMemoryError:
                raise
            except LightningXAIError as err:
                if self.dry_running:
                    raise
                self.warn(f"explainer {name!r} failed and is skipped this time: {err}")
                maps = torch.full((len(probe), 1, *probe.inputs.shape[2:]), float("nan"), device=probe.inputs.device)
            if maps.ndim == 4 and maps.shape[1] != 1:
                maps = reduce_channels(maps, signed=explainer.signed)
            elif maps.ndim == 3:  # sequences [B, C, L]
                maps = maps.float().sum(dim=1, keepdim=True) if explainer.signed else maps.float().abs().sum(1, True)
            results[name] = maps.float()
        return results

    # -- rendering (rank zero, background thread) ----------------------------------------------
    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        self.renderer(
            sinks,
            info.step,
            info.epoch,
            probe.inputs,
            results["probs"],
            {name: results[name] for name in self.names},
            targets=probe.targets,
            masks=probe.masks,
            keep_history=not self.dry_running,
        )

    def history(self, name: Optional[str] = None) -> list[tuple[int, Tensor]]:
        """The overlays logged so far for explainer ``name`` (default: the first) as
        ``[(epoch, overlays [N, 3, H, W]), ...]`` (thinned to ``max_history``; rank zero only)."""
        self.flush()
        return self.renderer.histories[name or self.names[0]].runs()

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
