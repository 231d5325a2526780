"""``MetricsMonitor`` and ``SanityCheckMonitor``: is the explanation any good, epoch by epoch?

Both are probe-set monitors (:class:`~lightning_xai.callbacks.base.ProbeMonitor`): the probe is
fixed at ``setup`` and kept in the checkpoint; each run computes per-sample scores on every
rank's shard through one library call per metric (:func:`lightning_xai.metrics.evaluate.per_sample_scores`,
:func:`lightning_xai.metrics.functional.parameter_randomization`), gathers them, and rank zero
logs means, tables and plots in the background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from typing_extensions import override

from lightning_xai.attribution.base import Explainer, OutputType, observe, select_output
from lightning_xai.callbacks.base import ProbeMonitor, RunInfo
from lightning_xai.callbacks.saliency import ExplainerSpec, SaliencyMonitor
from lightning_xai.data.probe import Probe
from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics.evaluate import METRICS, check_metric_name, per_sample_scores
from lightning_xai.metrics.functional.randomization import parameter_randomization, randomization_layers
from lightning_xai.metrics.functional.similarity import check_measure
from lightning_xai.sinks import Sink

__all__ = ["MetricsMonitor", "SanityCheckMonitor"]

_SKIPPABLE = (LightningXAIError, ValueError, TypeError, RuntimeError)
"""What a metric may raise on one batch without stopping training (out-of-memory still does)."""


class _Scores(nn.Module):
    """``model`` with ``select_output`` applied, so metric functions see ``[B, C]`` scores."""

    def __init__(self, model: nn.Module, output: OutputType) -> None:
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, x: Tensor) -> Tensor:
        return select_output(self.model(x), self.output)


def _resolve_explainers(explainers: Optional[Sequence[ExplainerSpec]], default: list[Explainer]) -> list[Explainer]:
    resolved = default if explainers is None else [SaliencyMonitor._resolve(e) for e in explainers]
    if not resolved:
        raise ValueError("Expected argument `explainers` to hold at least one explainer, but got an empty list.")
    return resolved


def _nan_rows(n: int, device: torch.device, *shape: int) -> Tensor:
    return torch.full((n, *shape), float("nan"), device=device)


def _nonfinite_probes(name: str, bad: Tensor, inputs: Tensor) -> str:
    """A warning naming the probes whose maps are non-finite and whether their input already was."""
    bad_input = ~torch.isfinite(inputs.flatten(1)).all(dim=1)
    parts = [
        f"probe {i} ({'NaN/inf input' if bool(bad_input[i]) else 'NaN/inf map, finite input'})"
        for i in bad.nonzero().flatten().tolist()
    ]
    return f"explainer {name!r} gave non-finite maps for {', '.join(parts)}; their scores are skipped this run."


class _QualityMonitor(ProbeMonitor):
    """Shared by both monitors: explainers and their names, the target, the scored model."""

    prefix = "xai/quality"

    def __init__(self, explainers: list[Explainer], names: Optional[list[str]], target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if target not in ("predicted", "label"):
            raise ValueError(f"Expected argument `target` to be 'predicted' or 'label', but got {target!r}.")
        self.explainers = explainers
        self.names = (
            SaliencyMonitor._check_names(names, explainers)
            if names is not None
            else SaliencyMonitor._unique_names(explainers)
        )
        self.target = target

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "explainers": [repr(e) for e in self.explainers], "target": self.target}

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is not None and self.probe.inputs.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} scores image maps: expected probe inputs [B, C, H, W], but got "
                f"{tuple(self.probe.inputs.shape)}."
            )
        if self.target == "label" and self.probe is not None and self.probe.targets is None:
            raise ValueError(f"{type(self).__name__}(target='label') needs labels, but the probe set has none.")
        for explainer in self.explainers:
            explainer.check(pl_module)

    def _model(self, pl_module: nn.Module) -> nn.Module:
        return pl_module if self.output is None else _Scores(pl_module, self.output)

    def _target(self, model: nn.Module, probe: Probe) -> Tensor:
        if self.target == "label" and probe.targets is not None:
            return probe.targets
        with observe(model), torch.no_grad():
            return model(probe.inputs).argmax(dim=1)

    @override
    def dry_run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            super().dry_run(trainer, pl_module)
        except (LightningXAIError, RuntimeError) as err:
            assert self.probe is not None
            raise ValueError(
                f"{type(self).__name__} fails on a probe input of shape {tuple(self.probe.inputs[:1].shape)} at fit "
                f"start (before training): {err}"
            ) from err


class MetricsMonitor(_QualityMonitor):
    """Log explanation-quality metrics of each explainer on a fixed probe set during training.

    Per run, explainer and metric it logs, to every logger the Trainer has:

    * scalar ``xai/metrics/<explainer>/<metric>``: the mean over the probe set (a curve over
      training in TensorBoard / W&B);
    * scalar ``xai/metrics/<explainer>/<metric>/skipped`` when some samples gave no value;
    * a table ``xai/metrics/table`` (explainer x metric) for the run.

    A metric (or explainer) that fails on a run (NaN maps, a numerical error) is warned about and
    skipped for that run; training goes on. Metrics are names from
    :data:`lightning_xai.metrics.evaluate.METRICS`: faithfulness (``deletion_auc``,
    ``insertion_auc``, ``pixel_flipping``, ``region_perturbation``, ``faithfulness_correlation``,
    ``infidelity``), robustness (``local_lipschitz``, ``max_sensitivity``, ``fragility``),
    localisation against the probe's masks (``pointing_game``, ``mask_aupr``, ``mask_mass``) and
    ``input_invariance``. Everything runs inside :func:`~lightning_xai.attribution.observe`:
    training is never perturbed.

    Args:
        explainers: Explainer objects or registry names. Default: ``[Saliency(), GradCAM()]``.
        metrics: Metric names. Default: ``deletion_auc`` and ``insertion_auc``, plus
            ``pointing_game`` and ``mask_aupr`` when the probe set has masks.
        metric_kwargs: ``{metric: {argument: value}}`` overrides (e.g. ``{"deletion_auc": {"steps": 10}}``).
        num_samples: Probe-set size.
        every_n_epochs: Run every n epochs.
        every_n_train_steps: Run every n training steps instead.
        target: ``"predicted"`` or ``"label"``: the class explained and scored.
        names: One log name per explainer (default: registry names).
        seed: Seed of the probe selection.
        probe: Optional user probe ``(inputs[, targets[, masks]])``, Dataset or DataLoader.
        output: How to pick the ``[B, C]`` scores from the model's output.
        max_overhead: Time budget as a fraction of training time.
        synchronous_logging: Render on the training thread (debugging).

    Raises:
        ValueError: An unknown metric name, or (at ``setup``) a mask metric without masks.

    Examples:
        >>> monitor = MetricsMonitor(["saliency", "grad_cam"], metrics=["deletion_auc", "pointing_game"])
        >>> # pl.Trainer(callbacks=[monitor]).fit(model, datamodule)
    """

    prefix = "xai/metrics"

    def __init__(
        self,
        explainers: Optional[Sequence[ExplainerSpec]] = None,
        *,
        metrics: Optional[Sequence[str]] = None,
        metric_kwargs: Optional[dict[str, dict[str, Any]]] = None,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        target: str = "predicted",
        names: Optional[list[str]] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        from lightning_xai.attribution import GradCAM, Saliency

        super().__init__(
            _resolve_explainers(explainers, [Saliency(), GradCAM()]),
            names,
            target,
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            seed=seed,
            probe=probe,
            output=output,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        if metrics is not None:
            if isinstance(metrics, str) or not metrics:
                raise ValueError(f"Expected argument `metrics` to be a non-empty list of names, but got {metrics!r}.")
            metrics = [check_metric_name(m) for m in metrics]
            if len(set(metrics)) != len(metrics):
                raise ValueError(f"Expected argument `metrics` to hold distinct names, but got {metrics!r}.")
        self._requested = list(metrics) if metrics is not None else None
        self.metrics: list[str] = self._requested or ["deletion_auc", "insertion_auc"]
        self.metric_kwargs = {check_metric_name(k): dict(v) for k, v in (metric_kwargs or {}).items()}

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "metrics": self._requested}

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().check(trainer, pl_module)
        has_masks = self.probe is not None and self.probe.masks is not None
        if self._requested is None:
            self.metrics = ["deletion_auc", "insertion_auc"] + (["pointing_game", "mask_aupr"] if has_masks else [])
        missing = [m for m in self.metrics if METRICS[m].needs_masks and not has_masks]
        if missing:
            raise ValueError(
                f"MetricsMonitor: the metrics {missing} need ground-truth masks, but the probe set has none; pass "
                "`probe=(inputs, targets, masks)` or data whose batches carry masks."
            )

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        model = self._model(pl_module)
        n, device = len(probe), probe.inputs.device
        target = self._target(model, probe)
        results: dict[str, Tensor] = {}
        for name, explainer in zip(self.names, self.explainers):
            bad = torch.zeros(n, dtype=torch.bool, device=device)
            try:
                maps = explainer(model, probe.inputs, target)
                bad = ~torch.isfinite(maps.flatten(1)).all(dim=1).to(device)
                if bool(bad.all()):
                    raise LightningXAIError(f"explainer {name!r} returned NaN/inf maps")
                if bool(bad.any()):  # only those probes' scores are skipped (NaN rows, counted as skipped)
                    self.warn(_nonfinite_probes(name, bad, probe.inputs))
                    maps = torch.where(bad.to(maps.device).view(-1, *[1] * (maps.ndim - 1)), 0.0, maps)
            except _SKIPPABLE as err:
                if self.dry_running:
                    raise
                self.warn(f"explainer {name!r} failed; its metrics are skipped this run: {err}")
                maps = None
            for metric in self.metrics:
                key = f"{name}/{metric}"
                if maps is None:
                    results[key] = _nan_rows(n, device)
                    continue
                try:
                    values = per_sample_scores(
                        metric, model, probe.inputs, maps, target, masks=probe.masks, explainer=explainer,
                        **self.metric_kwargs.get(metric, {}),
                    )  # fmt: skip
                    results[key] = torch.where(bad, torch.nan, values.detach().float().to(device))
                except torch.OutOfMemoryError:
                    raise
                except _SKIPPABLE as err:
                    if self.dry_running:
                        raise
                    self.warn(f"metric {metric!r} failed for explainer {name!r} and is skipped this run: {err}")
                    results[key] = _nan_rows(n, device)
        return results

    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        scalars: dict[str, float] = {}
        rows = []
        for name in self.names:
            row: list[Any] = [name]
            for metric in self.metrics:
                values = results[f"{name}/{metric}"].double()
                finite = torch.isfinite(values)
                mean = float(values[finite].mean()) if bool(finite.any()) else math.nan
                if not math.isnan(mean):
                    scalars[f"{self.prefix}/{name}/{metric}"] = mean
                if int((~finite).sum()):
                    scalars[f"{self.prefix}/{name}/{metric}/skipped"] = float((~finite).sum())
                row.append(mean)
            rows.append(row)
        for sink in sinks:
            if scalars:
                sink.log_scalars(scalars, info.step)
            sink.log_table(f"{self.prefix}/table", ["explainer", *self.metrics], rows, info.step)


class SanityCheckMonitor(_QualityMonitor):
    """Log Adebayo et al.'s model-parameter randomisation test of each explainer during training.

    Per run, on a deep copy of the model (the trained model is never touched), the layers are
    re-initialised top layer first (cumulatively for ``"cascading"``, one at a time for
    ``"independent"``) and each copy's maps are compared with the model's (Spearman rank
    correlation by default). Logged to every logger:

    * image ``xai/sanity/randomization``: the randomisation curve, one line per explainer
      (similarity per randomised layer);
    * scalars ``xai/sanity/<explainer>/<layer>`` (mean similarity after randomising up to that
      layer) and ``xai/sanity/<explainer>/mean`` (over layers; lower passes).

    A method whose curve stays high does not depend on the weights it claims to explain: watch
    the epoch at which a method starts (or stops) passing. An explainer failing on a run is
    warned about and skipped for that run.

    Args:
        explainers: Explainer objects or registry names. Default: gradient (``Saliency``),
            ``GradCAM`` and ``GuidedBackprop``.
        num_samples: Probe-set size.
        every_n_epochs: Run every n epochs.
        every_n_train_steps: Run every n training steps instead.
        mode: ``"cascading"`` or ``"independent"``.
        measure: ``"spearman"``, ``"pearson"``, ``"ssim"`` or ``"hog"``.
        randomization_seed: Seed of each layer's re-initialisation (the global RNG is restored).
        target: ``"predicted"`` or ``"label"``.
        names: One log name per explainer.
        seed: Seed of the probe selection.
        probe: Optional user probe.
        output: How to pick the ``[B, C]`` scores from the model's output.
        max_overhead: Time budget as a fraction of training time.
        synchronous_logging: Render on the training thread (debugging).

    Examples:
        >>> monitor = SanityCheckMonitor(["saliency", "grad_cam", "guided_backprop"], every_n_epochs=2)
    """

    prefix = "xai/sanity"
    log_key = "sanity"  # type: ignore[assignment]

    def __init__(
        self,
        explainers: Optional[Sequence[ExplainerSpec]] = None,
        *,
        num_samples: int = 8,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        mode: str = "cascading",
        measure: str = "spearman",
        randomization_seed: int = 43,
        target: str = "predicted",
        names: Optional[list[str]] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        from lightning_xai.attribution import GradCAM, GuidedBackprop, Saliency

        super().__init__(
            _resolve_explainers(explainers, [Saliency(), GradCAM(), GuidedBackprop()]),
            names,
            target,
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            seed=seed,
            probe=probe,
            output=output,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        if mode not in ("cascading", "independent"):
            raise ValueError(f"Expected argument `mode` to be 'cascading' or 'independent', but got {mode!r}.")
        self.mode = mode
        self.measure = check_measure(measure)
        if isinstance(randomization_seed, bool) or not isinstance(randomization_seed, int) or randomization_seed < 0:
            raise ValueError(
                f"Expected argument `randomization_seed` to be an int >= 0, but got {randomization_seed!r}."
            )
        self.randomization_seed = randomization_seed
        self.layers: list[str] = []

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "mode": self.mode, "measure": self.measure}

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().check(trainer, pl_module)
        self.layers = randomization_layers(pl_module)
        if not self.layers:
            raise ValueError("SanityCheckMonitor: the model has no layer with reset_parameters() to randomise.")

    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        model = self._model(pl_module)
        n, device = len(probe), probe.inputs.device
        layers = [f"model.{name}" for name in self.layers] if model is not pl_module else list(self.layers)
        target = self._target(model, probe)
        results: dict[str, Tensor] = {}
        for name, explainer in zip(self.names, self.explainers):
            try:
                sims = parameter_randomization(
                    model, probe.inputs, explainer, target, mode=self.mode, measure=self.measure, layers=layers,
                    seed=self.randomization_seed,
                )  # fmt: skip
                results[name] = sims.T.detach().float().to(device)  # [n, L]: the probe index first
            except torch.OutOfMemoryError:
                raise
            except _SKIPPABLE as err:
                if self.dry_running:
                    raise
                self.warn(f"explainer {name!r} failed in the randomisation test and is skipped this run: {err}")
                results[name] = _nan_rows(n, device, len(layers))
        return results

    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        from lightning_xai.render.quality_plots import randomization_plot

        curves: dict[str, Tensor] = {}
        spread: dict[str, Tensor] = {}
        scalars: dict[str, float] = {}
        for name in self.names:
            sims = results[name].double()
            finite = torch.isfinite(sims).all(dim=1)
            if not bool(finite.any()):
                continue
            curve = sims[finite].mean(dim=0)
            curves[name] = curve
            spread[name] = sims[finite].std(dim=0, unbiased=False)
            for layer, value in zip(self.layers, curve.tolist()):
                scalars[f"{self.prefix}/{name}/{layer}"] = value
            scalars[f"{self.prefix}/{name}/mean"] = float(curve.mean())
        if not curves:
            return
        image = randomization_plot(
            self.layers, curves, measure=self.measure, spread=spread,
            title=f"{self.mode} randomisation, epoch {info.epoch}",
        )  # fmt: skip
        for sink in sinks:
            sink.log_scalars(scalars, info.step)
            sink.log_image(f"{self.prefix}/randomization", image, info.step, caption=f"epoch {info.epoch}")
