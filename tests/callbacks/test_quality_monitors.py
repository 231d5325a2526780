"""MetricsMonitor and SanityCheckMonitor: logs read back, never perturb, checkpoints, failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from lightning_xai.attribution import GradCAM, Saliency
from lightning_xai.callbacks import MetricsMonitor, SanityCheckMonitor
from tests.helpers.data import tiny_datamodule
from tests.helpers.explainers import NaNExplainer
from tests.helpers.lightning_modules import tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit, trainer_kwargs


def _scalars(accs, tag: str) -> list[float]:
    return [e.value for a in accs if tag in a.Tags()["scalars"] for e in a.Scalars(tag)]


def _metrics(**kwargs) -> MetricsMonitor:
    kwargs.setdefault("num_samples", 4)
    kwargs.setdefault("metrics", ["deletion_auc", "pointing_game", "max_sensitivity"])
    return MetricsMonitor([Saliency(), GradCAM()], **kwargs)


def _sanity(**kwargs) -> SanityCheckMonitor:
    kwargs.setdefault("num_samples", 4)
    kwargs.setdefault("explainers", ["saliency", "grad_cam", "guided_backprop"])
    return SanityCheckMonitor(**kwargs)


def test_tensorboard_curves_table_and_randomisation_plot(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(tmp_path, [_metrics(), _sanity()], logger=logger, max_epochs=2)
    accs = read_tensorboard(logger.log_dir)
    for name in ("saliency", "grad_cam"):
        deletion = _scalars(accs, f"xai/metrics/{name}/deletion_auc")
        assert len(deletion) == 2 and all(0.0 <= v <= 1.0 for v in deletion)  # one point per epoch
        hits = _scalars(accs, f"xai/metrics/{name}/pointing_game")
        assert len(hits) == 2 and all(v in (0.0, 0.25, 0.5, 0.75, 1.0) for v in hits)
        # an all-zero Grad-CAM map (untrained ReLU net) has no relative sensitivity: counted as skipped
        logged = _scalars(accs, f"xai/metrics/{name}/max_sensitivity")
        skipped = _scalars(accs, f"xai/metrics/{name}/max_sensitivity/skipped")
        assert len(logged) == 2 or skipped, (logged, skipped)
    layers = ["fc", "features.7", "features.5", "features.4", "features.1", "features.0"]
    for name in ("saliency", "grad_cam", "guided_backprop"):
        for layer in layers:
            values = _scalars(accs, f"xai/sanity/{name}/{layer}")
            assert len(values) == 2 and all(-1.0 <= v <= 1.0 for v in values), (name, layer)
    images = [a for a in accs if "xai/sanity/randomization" in a.Tags()["images"]]
    assert images and len(images[0].Images("xai/sanity/randomization")) == 2
    texts = [t for a in accs for t in a.Tags().get("tensors", []) if "xai/metrics/table" in t]
    assert texts, "the per-run table is logged as text"


def test_wandb_offline_curves_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="xai-quality")
    monitors = [_metrics(metrics=["deletion_auc"]), _sanity(explainers=["saliency"])]
    fit(tmp_path, monitors, logger=logger, max_epochs=2)
    summary = dict(logger.experiment.summary)  # W&B's own record of the last value of every key
    logger.experiment.finish()
    assert 0.0 <= summary["xai/metrics/saliency/deletion_auc"] <= 1.0
    assert -1.0 <= summary["xai/sanity/saliency/mean"] <= 1.0
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    plots = list((run / "files" / "media").rglob("randomization_*.png"))
    assert len(plots) == 2, plots
    tables = list((run / "files" / "media").rglob("*table*.table.json"))
    assert tables, list((run / "files" / "media").rglob("*"))
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["explainer", "deletion_auc"] and table["data"][0][0] == "saliency"


def _weights(tmp_path: Path, callbacks: list[pl.Callback]) -> dict[str, torch.Tensor]:
    model = fit(tmp_path, callbacks, logger=TensorBoardLogger(str(tmp_path), name="w"), max_epochs=2)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("monitor", ["metrics", "sanity"])
def test_never_perturbs_training_bitwise(tmp_path: Path, monitor: str) -> None:
    reference = _weights(tmp_path / "without", [])
    if monitor == "metrics":
        callback = _metrics(metrics=["deletion_auc", "faithfulness_correlation", "local_lipschitz"])
    else:
        callback = _sanity(mode="independent")
    with_monitor = _weights(tmp_path / "with", [callback])
    for k in reference:
        assert torch.equal(reference[k], with_monitor[k]), f"{k} differs with {monitor} monitor"
    assert callback._last_epoch_run == 1, "the monitor must have run"


def test_checkpoint_round_trip_and_pinned_state_key(tmp_path: Path) -> None:
    monitor = _sanity()
    fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path), name="c"), max_epochs=1, enable_checkpointing=True)
    ckpt = next(Path(tmp_path).rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)["callbacks"][monitor.state_key]
    resumed = _sanity()
    resumed.load_state_dict(state)
    assert torch.equal(resumed.probe.inputs, monitor.probe.inputs.cpu())
    assert resumed._last_epoch_run == 0
    assert _metrics().state_key == (
        "MetricsMonitor{'num_samples': 4, 'every_n_epochs': 1, 'every_n_steps': None, 'explainers': "
        "['Saliency(abs=True)', \"GradCAM(layer=None, interpolate_mode='bilinear')\"], 'target': 'predicted', "
        "'metrics': ['deletion_auc', 'pointing_game', 'max_sensitivity']}"
    )
    assert _sanity().state_key != _sanity(mode="independent").state_key


def test_failing_explainer_is_warned_and_skipped(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="nan")
    metrics = MetricsMonitor([NaNExplainer(), Saliency()], metrics=["deletion_auc"], num_samples=2)
    with pytest.warns(UserWarning, match="NaN"):
        fit(tmp_path, [metrics], logger=logger, max_epochs=2)
    accs = read_tensorboard(logger.log_dir)
    assert _scalars(accs, "xai/metrics/test_nan/deletion_auc/skipped") == [2.0, 2.0]
    assert _scalars(accs, "xai/metrics/test_nan/deletion_auc") == []
    assert len(_scalars(accs, "xai/metrics/saliency/deletion_auc")) == 2


def test_mask_metric_without_masks_fails_at_setup(tmp_path: Path) -> None:
    probe = (torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 0]))  # no masks
    monitor = MetricsMonitor(["saliency"], metrics=["mask_aupr"], num_samples=4, probe=probe)
    trainer = pl.Trainer(callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match="need ground-truth masks"):
        trainer.fit(tiny_model(), datamodule=tiny_datamodule())
    assert trainer.global_step == 0


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (lambda: MetricsMonitor(metrics=["deletion"]), "Unknown metric 'deletion'"),
        (lambda: MetricsMonitor(metrics=[]), "non-empty"),
        (lambda: MetricsMonitor(metric_kwargs={"nope": {}}), "Unknown metric"),
        (lambda: MetricsMonitor(target="best"), "target"),
        (lambda: SanityCheckMonitor(mode="top"), "mode"),
        (lambda: SanityCheckMonitor(measure="cosine"), "measure"),
        (lambda: SanityCheckMonitor(explainers=[]), "explainers"),
    ],
)
def test_bad_arguments_rejected_in_init(factory, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        factory()
