from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from lightning_xai.attribution import GradCAM, IntegratedGradients, Saliency
from lightning_xai.callbacks import SaliencyMonitor
from tests.helpers.data import tiny_datamodule
from tests.helpers.explainers import NaNExplainer
from tests.helpers.lightning_modules import tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit, trainer_kwargs


def _monitor(**kwargs) -> SaliencyMonitor:
    kwargs.setdefault("num_samples", 4)
    return SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=4)], **kwargs)


def _tags(accs, kind: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for acc in accs:
        for tag in acc.Tags()[kind]:
            events = (
                acc.Images(tag) if kind == "images" else acc.Scalars(tag) if kind == "scalars" else acc.Histograms(tag)
            )
            out[tag] = out.get(tag, 0) + len(events)
    return out


def test_tensorboard_images_scalars_histograms(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(tmp_path, [_monitor()], logger=logger, max_epochs=2)
    accs = read_tensorboard(logger.log_dir)
    images = _tags(accs, "images")
    scalars = _tags(accs, "scalars")
    for name in ("grad_cam", "integrated_gradients"):
        assert images[f"xai/saliency/{name}/overlays"] == 2, images  # one grid per epoch, each once
        assert images[f"xai/saliency/{name}/evolution/00"] == 2
        assert f"xai/saliency/{name}/evolution/03" in images
        assert scalars[f"xai/saliency/{name}/entropy"] == 2
        assert scalars[f"xai/saliency/{name}/mask_share"] == 2
        assert scalars[f"xai/saliency/{name}/ssim_prev"] == 1  # from the second run on
        assert scalars[f"xai/saliency/{name}/nonfinite"] == 2
    assert _tags(accs, "histograms")["xai/saliency/grad_cam/values"] == 2
    entropy = [
        e.value
        for acc in accs
        if "xai/saliency/grad_cam/entropy" in acc.Tags()["scalars"]
        for e in acc.Scalars("xai/saliency/grad_cam/entropy")
    ]
    assert all(0.0 <= v <= 1.0 for v in entropy)
    # the evolution strip of the second epoch shows two frames: it is wider than the first
    acc = next(a for a in accs if "xai/saliency/grad_cam/evolution/00" in a.Tags()["images"])
    widths = [e.width for e in acc.Images("xai/saliency/grad_cam/evolution/00")]
    assert widths[1] > widths[0]


def _train_weights(tmp_path: Path, callbacks: list[pl.Callback], **overrides) -> dict[str, torch.Tensor]:
    model = fit(tmp_path, callbacks, logger=TensorBoardLogger(str(tmp_path), name="w"), **overrides)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("schedule", [{"every_n_epochs": 1}, {"every_n_train_steps": 2}])
def test_observe_never_perturb_bitwise(tmp_path: Path, schedule: dict) -> None:
    """Same seed, with and without the monitor: bitwise-identical weights and BatchNorm statistics."""
    reference = _train_weights(tmp_path / "without", [])
    monitor = SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=4), Saliency()], num_samples=4, **schedule)
    with_monitor = _train_weights(tmp_path / "with", [monitor])
    assert reference.keys() == with_monitor.keys()
    for k in reference:
        assert torch.equal(reference[k], with_monitor[k]), f"{k} differs with the monitor attached"
    assert monitor.history(), "the monitor must have run"


def test_wandb_offline_run_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="xai-test")
    fit(tmp_path, [_monitor()], logger=logger, max_epochs=2)
    logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    media = runs[0] / "files" / "media"
    overlays = list(media.rglob("overlays_*.png"))
    assert len([p for p in overlays if "grad_cam" in str(p)]) == 2, overlays
    assert list(media.rglob("*probe_table*.table.json")), list(media.rglob("*"))


def test_other_logger_gets_pngs_and_scalars(tmp_path: Path) -> None:
    logger = CSVLogger(str(tmp_path), name="csv")
    fit(tmp_path, [_monitor()], logger=logger, max_epochs=1)
    pngs = list(Path(logger.log_dir).rglob("*.png"))
    assert any("overlays" in str(p) for p in pngs), pngs
    metrics = (Path(logger.log_dir) / "metrics.csv").read_text()
    assert "xai/saliency/grad_cam/entropy" in metrics


def test_no_logger_fails_at_setup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="logger"):
        fit(tmp_path, [_monitor()], logger=False)


def test_bad_layer_fails_before_training(tmp_path: Path) -> None:
    monitor = SaliencyMonitor([GradCAM(layer="features.42")], num_samples=2)
    pl.seed_everything(0)
    model = tiny_model()
    trainer = pl.Trainer(callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match="features.42"):
        trainer.fit(model, datamodule=tiny_datamodule())
    assert trainer.global_step == 0


def test_wrong_input_shape_fails_before_training(tmp_path: Path) -> None:
    probe = (torch.rand(4, 1, 16, 16), torch.tensor([0, 1, 2, 0]))  # the model expects 3 channels
    monitor = SaliencyMonitor([GradCAM()], num_samples=4, probe=probe)
    pl.seed_everything(0)
    trainer = pl.Trainer(callbacks=[monitor], logger=TensorBoardLogger(str(tmp_path)), **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"shape \(1, 1, 16, 16\)"):
        trainer.fit(tiny_model(), datamodule=tiny_datamodule())
    assert trainer.global_step == 0


def test_nan_maps_are_reported_and_skipped(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="nan")
    monitor = SaliencyMonitor([NaNExplainer(), GradCAM()], num_samples=2)
    with pytest.warns(UserWarning, match="NaN"):
        fit(tmp_path, [monitor], logger=logger, max_epochs=2)
    accs = read_tensorboard(logger.log_dir)
    flags = [
        e.value
        for a in accs
        if "xai/saliency/test_nan/nonfinite" in a.Tags()["scalars"]
        for e in a.Scalars("xai/saliency/test_nan/nonfinite")
    ]
    assert flags == [2.0, 2.0]  # both probes, both runs
    images = _tags(accs, "images")
    assert images["xai/saliency/test_nan/overlays"] == 2  # blank cells, captioned
    assert images["xai/saliency/grad_cam/overlays"] == 2
    assert "xai/saliency/test_nan/entropy" not in _tags(accs, "scalars")


def test_every_n_epochs_schedule_and_fast_dev_run(tmp_path: Path) -> None:
    logger = TensorBoardLogger(str(tmp_path), name="sched")
    monitor = _monitor(every_n_epochs=2)
    fit(tmp_path, [monitor], logger=logger, max_epochs=4)
    assert [e for e, _ in monitor.history()] == [1, 3]
    monitor2 = _monitor()
    fit(tmp_path / "fdr", [monitor2], logger=TensorBoardLogger(str(tmp_path / "fdr")), fast_dev_run=True)
    assert monitor2.history() == []


def test_runs_at_train_epoch_end_without_validation(tmp_path: Path) -> None:
    monitor = _monitor()
    fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path)), max_epochs=2, limit_val_batches=0)
    assert [e for e, _ in monitor.history()] == [0, 1]


def test_probe_is_class_balanced_and_restored_from_checkpoint(tmp_path: Path) -> None:
    monitor = _monitor(num_samples=6)
    logger = TensorBoardLogger(str(tmp_path), name="ckpt")
    fit(tmp_path, [monitor], logger=logger, max_epochs=1, enable_checkpointing=True)
    assert torch.bincount(monitor.probe.targets, minlength=3).tolist() == [2, 2, 2]
    ckpt = next(Path(tmp_path).rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)["callbacks"][monitor.state_key]
    resumed = _monitor(num_samples=6)
    assert resumed.state_key == monitor.state_key
    resumed.load_state_dict(state)
    assert torch.equal(resumed.probe.inputs, monitor.probe.inputs.cpu())
    assert torch.equal(resumed.probe.targets, monitor.probe.targets.cpu())


def test_state_key_is_pinned_and_separates_configurations() -> None:
    a = SaliencyMonitor([GradCAM()], num_samples=4)
    b = SaliencyMonitor([GradCAM(layer="features.4")], num_samples=4)
    assert a.state_key != b.state_key
    assert a.state_key == SaliencyMonitor([GradCAM()], num_samples=4).state_key
    # pinned: changing it orphans the monitor state in users' existing checkpoints
    assert a.state_key == (
        "SaliencyMonitor{'num_samples': 4, 'every_n_epochs': 1, 'every_n_steps': None, "
        "'explainers': [\"GradCAM(layer=None, interpolate_mode='bilinear')\"], 'target': 'predicted'}"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_train_steps": -3}, "every_n_train_steps"),
        ({"target": "best"}, "target"),
        ({"overlay_alpha": 1.5}, "overlay_alpha"),
        ({"explainers": []}, "explainers"),
        ({"explainers": ["grad_cma"]}, "grad_cma"),
    ],
)
def test_bad_arguments_rejected_in_init(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SaliencyMonitor(**kwargs)


def test_resumed_fit_explains_the_same_probe(tmp_path: Path) -> None:
    first = _monitor(num_samples=3)
    fit(tmp_path / "a", [first], logger=TensorBoardLogger(str(tmp_path / "a")), max_epochs=1, enable_checkpointing=True)
    ckpt = next((tmp_path / "a").rglob("*.ckpt"))
    resumed = _monitor(num_samples=3)
    pl.seed_everything(0)
    trainer = pl.Trainer(
        callbacks=[resumed],
        logger=TensorBoardLogger(str(tmp_path / "b")),
        **trainer_kwargs(tmp_path / "b", max_epochs=2),
    )
    # the resumed run's validation data differ (another seed), so setup alone would pick other images...
    trainer.fit(tiny_model(), datamodule=tiny_datamodule(seed=7), ckpt_path=str(ckpt))
    # ...but the checkpoint's probe wins, and the resumed run explains it at epoch 1, continuing the
    # evolution strips the checkpoint holds instead of starting them over
    assert torch.equal(resumed.probe.inputs.cpu(), first.probe.inputs.cpu())
    assert [e for e, _ in resumed.history()] == [0, 1]
    assert torch.equal(resumed.history()[0][1], first.history()[0][1])
    assert resumed.state_dict()["last_epoch_run"] == 1
    fresh = _monitor(num_samples=3)
    fit(tmp_path / "c", [fresh], dm_kwargs={"seed": 7}, logger=TensorBoardLogger(str(tmp_path / "c")), max_epochs=1)
    assert not torch.equal(fresh.probe.inputs.cpu(), first.probe.inputs.cpu()), "other data, other probe"


def test_resume_with_a_changed_configuration_warns_what_changed(tmp_path: Path) -> None:
    """One explainer added between runs: the state_key changes, so the history starts over; the
    warning names the monitor and the field that changed (also for checkpoints without ``key_fields``).
    An unchanged monitor resumes silently."""
    import warnings

    from lightning_xai.callbacks import MetricsMonitor

    def metrics() -> MetricsMonitor:
        return MetricsMonitor([Saliency()], metrics=["deletion_auc"], metric_kwargs={"deletion_auc": {"steps": 4}},
                              num_samples=2)  # fmt: skip

    first = SaliencyMonitor([GradCAM()], num_samples=2)
    fit(tmp_path / "a", [first, metrics()], logger=TensorBoardLogger(str(tmp_path / "a")), max_epochs=1,
        enable_checkpointing=True)  # fmt: skip
    ckpt = next((tmp_path / "a").rglob("*.ckpt"))
    old_style = tmp_path / "old.ckpt"  # as written before key_fields existed: the diff comes from the key
    state = torch.load(ckpt, weights_only=False)
    for value in state["callbacks"].values():
        value.pop("key_fields", None)
    torch.save(state, old_style)

    for path in (ckpt, old_style):
        resumed = SaliencyMonitor([GradCAM(), Saliency()], num_samples=2)
        pl.seed_everything(0)
        trainer = pl.Trainer(callbacks=[resumed, metrics()], logger=TensorBoardLogger(str(tmp_path / "b")),
                             **trainer_kwargs(tmp_path / "b", max_epochs=2))  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(tiny_model(), datamodule=tiny_datamodule(), ckpt_path=str(path))
        ours = [str(w.message) for w in caught if "history starts over" in str(w.message)]
        expected = (
            f"SaliencyMonitor: the checkpoint holds state for explainers {[repr(GradCAM())]!r} but this monitor has "
            f"{[repr(GradCAM()), repr(Saliency())]!r}; its history starts over."
        )
        assert ours == [expected], (path.name, ours)
        assert [e for e, _ in resumed.history()] == [1]  # it did start over
