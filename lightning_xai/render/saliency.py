"""Presentation of saliency runs: captioned overlay grids, evolution strips, scalars and tables.

:class:`SaliencyRenderer` turns one run's CPU tensors (probe images, predicted probabilities, one
map batch per explainer) into what each sink logs. It keeps the per-explainer history the
evolution strips are built from (:class:`EvolutionHistory`), which a monitor saves in its
checkpoint so a resumed run continues its strips. No Lightning import: usable from any loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import torch
from torch import Tensor

from lightning_xai.metrics.functional.maps import map_entropy, map_ssim, mask_share
from lightning_xai.render.images import MIN_TILE_PX, annotated_grid, normalize_maps, overlay, to_display

__all__ = ["as_image_batch", "probe_captions", "EvolutionHistory", "SaliencyRenderer"]


def as_image_batch(x: Tensor, min_height: int = 8) -> Tensor:
    """View a batch of inputs or maps as ``[B, C, H, W]`` images.

    Images pass through; flat feature vectors ``[B, D]`` become one-row heat strips
    ``[B, 1, h, D]`` and sequences ``[B, C, L]`` become ``[B, C, h, L]`` (each row repeated
    ``h = max(min_height, L // 8)`` times so the strip is visible).

    Raises:
        ValueError: ``x`` has fewer than 2 or more than 4 dimensions.

    Examples:
        >>> as_image_batch(torch.rand(2, 784)).shape
        torch.Size([2, 1, 98, 784])
    """
    if x.ndim == 4:
        return x
    if x.ndim == 2:
        x = x[:, None, None, :]
    elif x.ndim == 3:
        x = x[:, :, None, :]
    else:
        raise ValueError(
            f"Can render inputs of shape [B, D], [B, C, L] or [B, C, H, W], but got {tuple(x.shape)}; "
            "pass renderable inputs or use a monitor without images."
        )
    height = max(min_height, x.shape[-1] // 8)
    return x.expand(-1, -1, height, -1)


def probe_captions(targets: Optional[Tensor], probs: Tensor, class_names: Optional[Sequence[str]] = None) -> list[str]:
    """``"true: <name>\\npred: <name> (<p>)"`` per probe input.

    Examples:
        >>> probe_captions(torch.tensor([1]), torch.tensor([[0.2, 0.8]]), ["cat", "dog"])
        ['true: dog\\npred: dog (0.80)']
    """

    def name(index: int) -> str:
        if class_names is not None and 0 <= index < len(class_names):
            return str(class_names[index])
        return str(index)

    conf, pred = probs.max(dim=1)
    captions = []
    for i in range(probs.shape[0]):
        true = name(int(targets[i])) if targets is not None else "?"
        captions.append(f"true: {true}\npred: {name(int(pred[i]))} ({float(conf[i]):.2f})")
    return captions


class EvolutionHistory:
    """Each probe input's overlays across runs, thinned to ``max_history`` runs.

    Frames are stored as ``uint8`` (what is displayed anyway), with their captioned cells cached
    so a strip is a concatenation, not a re-render. The first and the newest run are always kept;
    older runs are thinned out evenly.

    Args:
        max_history: Most runs kept (>= 2).
        min_size: Strip frames are upscaled (nearest) to at least this many pixels.

    Examples:
        >>> history = EvolutionHistory(max_history=3)
        >>> for epoch in range(5):
        ...     history.append(epoch, torch.rand(2, 3, 8, 8))
        >>> [e for e, _ in history.runs()]
        [0, 3, 4]
        >>> history.strip(0).shape[0]
        3
    """

    def __init__(self, max_history: int = 16, min_size: int = MIN_TILE_PX) -> None:
        if isinstance(max_history, bool) or not isinstance(max_history, int) or max_history < 2:
            raise ValueError(f"Expected argument `max_history` to be an int >= 2, but got {max_history!r}.")
        self.max_history = max_history
        self.min_size = min_size
        self._runs: list[tuple[int, Tensor]] = []  # (epoch, uint8 overlays [N, 3, H, W])
        self._cells: list[Optional[Tensor]] = []

    def __len__(self) -> int:
        return len(self._runs)

    def append(self, epoch: int, overlays: Tensor) -> None:
        """Add one run's ``[N, 3, H, W]`` overlays in ``[0, 1]``."""
        frames = (overlays.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        self._runs.append((int(epoch), frames))
        self._cells.append(None)
        if len(self._runs) > self.max_history:
            keep = torch.linspace(0, len(self._runs) - 1, self.max_history).round().long().unique().tolist()
            self._runs = [self._runs[i] for i in keep]
            self._cells = [self._cells[i] for i in keep]

    def runs(self) -> list[tuple[int, Tensor]]:
        """``[(epoch, overlays [N, 3, H, W] float in [0, 1]), ...]``, oldest first."""
        return [(epoch, frames.float() / 255.0) for epoch, frames in self._runs]

    def _scale(self, frames: Tensor) -> int:
        return max(1, math.ceil(self.min_size / max(frames.shape[-2:])))

    def _run_cells(self, k: int) -> Tensor:
        cells = self._cells[k]
        if cells is None:
            epoch, frames = self._runs[k]
            images = frames.float() / 255.0
            scale = self._scale(frames)
            cells = torch.stack([annotated_grid(f[None], [f"epoch {epoch}"], ncols=1, scale=scale) for f in images])
            self._cells[k] = cells
        return cells

    def strip(self, index: int) -> Tensor:
        """Probe input ``index``'s frames side by side, each captioned with its epoch: ``[3, H, W]``."""
        if not self._runs:
            raise ValueError("The history is empty.")
        return torch.cat([self._run_cells(k)[index] for k in range(len(self._runs))], dim=-1)

    def state_dict(self) -> dict[str, Any]:
        """Epochs and uint8 frames (checkpoint-friendly: no cached cells)."""
        return {"epochs": [e for e, _ in self._runs], "frames": [f for _, f in self._runs]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""
        epochs, frames = list(state.get("epochs", [])), list(state.get("frames", []))
        self._runs = [(int(e), f.to(torch.uint8).cpu()) for e, f in zip(epochs, frames)]
        self._cells = [None] * len(self._runs)


_BLANK = 0.5  # a non-finite map's cell: flat grey, captioned with the reason


def _nonfinite_reason(input_nonfinite: bool) -> str:
    return "NaN/inf input" if input_nonfinite else "NaN/inf map, finite input"


class SaliencyRenderer:
    """Render one saliency run per explainer into every sink.

    Per explainer ``name`` it logs, under ``prefix`` (``xai/saliency``): ``<prefix>/<name>/overlays``
    (a captioned grid with a colour bar that says what the colours mean), the scalars
    ``<prefix>/<name>/entropy``, ``mask_share`` (with masks), ``ssim_prev`` (to the previous run)
    and ``nonfinite``, a histogram ``<prefix>/<name>/values``, per-probe strips
    ``<prefix>/<name>/evolution/<i>``, and a labelled table ``<prefix>/probe_table`` of probe inputs
    x explainers.
    A probe whose map holds NaN/inf is handled alone: its cell is left blank (grey, captioned
    "NaN/inf input" or "NaN/inf map, finite input"), it is left out of the scalars and the
    histogram, ``nonfinite`` counts such probes, and ``warn`` names the explainer, the probe
    indices and which of the two it was; the other probes' maps are logged as usual.

    Args:
        names: One name per explainer.
        signed: Whether each explainer's maps are signed.
        class_names: Names of the classes for captions.
        max_history, overlay_alpha, clip_percentile, log_evolution, log_histograms: see
            :class:`~lightning_xai.callbacks.SaliencyMonitor`.
        warn: Called with a message when maps are skipped.
        prefix: The group every tag is logged under.
    """

    def __init__(
        self,
        names: Sequence[str],
        signed: Sequence[bool],
        class_names: Optional[Sequence[str]] = None,
        max_history: int = 16,
        overlay_alpha: float = 0.5,
        clip_percentile: float = 99.0,
        log_evolution: bool = True,
        log_histograms: bool = True,
        warn: Any = None,
        prefix: str = "xai/saliency",
    ) -> None:
        self.prefix = prefix
        self.names = list(names)
        self.signed = dict(zip(self.names, signed))
        self.class_names = list(class_names) if class_names is not None else None
        self.overlay_alpha = overlay_alpha
        self.clip_percentile = clip_percentile
        self.log_evolution = log_evolution
        self.log_histograms = log_histograms
        self.warn = warn or (lambda message: None)
        self.histories = {name: EvolutionHistory(max_history) for name in self.names}
        self._previous: dict[str, Tensor] = {}

    def state_dict(self) -> dict[str, Any]:
        """The evolution histories and the previous maps (for ``ssim_prev``) per explainer."""
        return {
            "histories": {name: h.state_dict() for name, h in self.histories.items()},
            "previous": {name: m.half() for name, m in self._previous.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (unknown explainer names are ignored)."""
        for name, hist in state.get("histories", {}).items():
            if name in self.histories:
                self.histories[name].load_state_dict(hist)
        self._previous = {n: m.float() for n, m in state.get("previous", {}).items() if n in self.histories}

    @staticmethod
    def _nonfinite_message(name: str, ok: Tensor, bad_input: Tensor, epoch: int, step: int) -> str:
        parts = [f"probe {i} ({_nonfinite_reason(bool(bad_input[i]))})" for i in (~ok).nonzero().flatten().tolist()]
        return (
            f"explainer {name!r} gave non-finite maps at epoch {epoch} (step {step}) for {', '.join(parts)}; "
            "those cells are left blank, the other probes' maps are logged."
        )

    def __call__(
        self,
        sinks: Sequence[Any],
        step: int,
        epoch: int,
        inputs: Tensor,
        probs: Tensor,
        maps: Mapping[str, Tensor],
        targets: Optional[Tensor] = None,
        masks: Optional[Tensor] = None,
        keep_history: bool = True,
    ) -> dict[str, float]:
        """Render and log one run; returns the scalars logged.

        Args:
            sinks: Where to log.
            step, epoch: The run's step (x-axis) and epoch (captions).
            inputs: ``[N, ...]`` probe inputs (images, vectors or sequences).
            probs: ``[N, C]`` predicted probabilities.
            maps: ``{name: [N, 1, H, W] maps}`` (flat/sequence maps are viewed as strips).
            targets: ``[N]`` true classes, if known.
            masks: ``[N, 1, H, W]`` ground-truth masks, if known.
            keep_history: ``False`` renders without recording the run (a dry run).
        """
        images = to_display(as_image_batch(inputs.float()))
        captions = probe_captions(targets, probs, self.class_names)
        bad_input = ~torch.isfinite(inputs.detach().float().flatten(1)).all(dim=1).cpu()
        scalars: dict[str, float] = {}
        table_maps: dict[str, Tensor] = {}
        ncols = min(4, len(captions))
        for name in self.names:
            m = maps[name].float()
            m = as_image_batch(m) if m.ndim != 4 else m
            ok = torch.isfinite(m.flatten(1)).all(dim=1).cpu()
            scalars[f"{self.prefix}/{name}/nonfinite"] = float((~ok).sum())
            if not bool(ok.all()):
                self.warn(self._nonfinite_message(name, ok, bad_input, epoch, step))
            m = torch.where(ok.to(m.device).view(-1, 1, 1, 1), m, torch.zeros_like(m))
            good = m[ok.to(m.device)]
            signed = bool(self.signed.get(name, True) and good.numel() > 0 and good.min() < 0)
            normalized = normalize_maps(m, signed=signed, clip_percentile=self.clip_percentile)
            overlays = overlay(images, normalized, signed=signed, alpha=self.overlay_alpha)
            overlays[~ok.to(overlays.device)] = _BLANK  # the bad probe's cell is blank, captioned below
            cell_captions = [
                c if ok[i] else f"{c}\n{_nonfinite_reason(bool(bad_input[i]))}" for i, c in enumerate(captions)
            ]
            table_maps[name] = overlays
            grid = annotated_grid(
                overlays,
                cell_captions,
                ncols=ncols,
                title=f"{name} - epoch {epoch}",
                colorbar="signed" if signed else "unsigned",
            )
            for sink in sinks:
                sink.log_image(f"{self.prefix}/{name}/overlays", grid, step, caption=f"{name}, epoch {epoch}")
            if good.shape[0] > 0:
                scalars[f"{self.prefix}/{name}/entropy"] = float(map_entropy(good))
                if masks is not None and masks.shape[-2:] == m.shape[-2:]:
                    scalars[f"{self.prefix}/{name}/mask_share"] = float(
                        mask_share(good, masks[ok.to(masks.device)].float())
                    )
            previous = self._previous.get(name)
            if previous is not None and previous.shape == m.shape and min(m.shape[-2:]) > 1:
                both = ok.to(m.device) & torch.isfinite(previous.flatten(1)).all(dim=1).to(m.device)
                if bool(both.any()):
                    scalars[f"{self.prefix}/{name}/ssim_prev"] = float(map_ssim(m[both], previous.to(m.device)[both]))
            if self.log_histograms and good.shape[0] > 0:
                for sink in sinks:
                    sink.log_histogram(f"{self.prefix}/{name}/values", good, step)
            if keep_history:  # the bad probes' maps stay NaN so the next ssim_prev leaves them out
                self._previous[name] = torch.where(ok.to(m.device).view(-1, 1, 1, 1), m, torch.nan)
            if self.log_evolution:
                history = self.histories[name]
                if not keep_history:  # a dry run renders one strip from a throwaway history
                    history = EvolutionHistory(history.max_history, history.min_size)
                history.append(epoch, overlays)
                for i in range(overlays.shape[0]):
                    strip = history.strip(i)
                    for sink in sinks:
                        sink.log_image(
                            f"{self.prefix}/{name}/evolution/{i:02d}",
                            strip,
                            step,
                            caption=f"probe {i}: {name} over epochs",
                        )
        for sink in sinks:
            sink.log_scalars(scalars, step)
        if table_maps:
            columns = ["probe", "label", "input", *table_maps]
            rows = [
                [i, captions[i].replace("\n", ", "), images[i], *(t[i] for t in table_maps.values())]
                for i in range(images.shape[0])
            ]
            for sink in sinks:
                sink.log_table(f"{self.prefix}/probe_table", columns, rows, step)
        return scalars
