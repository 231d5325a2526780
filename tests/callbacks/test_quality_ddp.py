"""MetricsMonitor and SanityCheckMonitor under a 2-process ``ddp_spawn`` Trainer (gloo, CPU).

One single-process fit and one ddp_spawn fit of the same model serve every check:

* the probe is sharded and the per-sample rows gathered in probe order equal one process's
  computation on the weights the monitors saw (the recording monitors save them);
* the logged curves equal the single-process run's, step for step, and rank zero logs each once
  per epoch.

The weights must be identical when the monitors run, whatever the number of processes: the model
(``DriftingClassifier``) never learns from data but drifts at the start of every epoch by a fixed
seeded amount, so the logged curves change over epochs, identically in both runs. Both runs take
the same number of steps per epoch (``limit_train_batches``), so the logged steps match too."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.attribution import Saliency
from lightning_xai.data.probe import Probe
from lightning_xai.metrics.functional import deletion_auc, parameter_randomization, pointing_game
from tests.helpers.callbacks import RecordingMetricsMonitor, RecordingSanityCheckMonitor
from tests.helpers.data import tiny_datamodule
from tests.helpers.lightning_modules import DriftingClassifier, tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import trainer_kwargs

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.numerics]

EPOCHS = 2
STEPS = 8  # deletion/insertion curve steps


def _run(tmp_path: Path, name: str, **overrides: object) -> dict[str, list[tuple[int, float]]]:
    """Fits with both recording monitors (they save to ``tmp_path/<name>_{metrics,sanity}.pt``) and
    returns the logged ``xai/`` scalar curves as sorted ``(step, value)`` lists."""
    pl.seed_everything(0, verbose=False)
    dm = tiny_datamodule()
    model = DriftingClassifier(num_classes=dm.num_classes, width=4, dropout=0.25)
    metrics = RecordingMetricsMonitor(
        str(tmp_path / f"{name}_metrics.pt"),
        explainers=["saliency", "grad_cam"],
        metrics=["deletion_auc", "insertion_auc", "pointing_game", "mask_aupr", "mask_mass"],
        metric_kwargs={"deletion_auc": {"steps": STEPS}, "insertion_auc": {"steps": STEPS}},
        num_samples=5,  # 3 + 3 rows on two ranks: the padding row is dropped
    )
    sanity = RecordingSanityCheckMonitor(
        str(tmp_path / f"{name}_sanity.pt"), explainers=["saliency", "grad_cam"], num_samples=5
    )
    logger = TensorBoardLogger(str(tmp_path), name=name)
    kwargs = trainer_kwargs(tmp_path, max_epochs=EPOCHS, limit_train_batches=2, logger=logger, **overrides)
    pl.Trainer(callbacks=[metrics, sanity], **kwargs).fit(model, datamodule=dm)
    logger.finalize("success")
    curves: dict[str, list[tuple[int, float]]] = {}
    for acc in read_tensorboard(Path(tmp_path) / name):
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("xai/"):
                curves.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in curves.items()}


def test_ddp_spawn_gathers_in_probe_order_and_logs_the_single_process_curves(tmp_path: Path) -> None:
    single = _run(tmp_path, "single")
    ddp = _run(tmp_path, "ddp", strategy="ddp_spawn", devices=2)

    # what rank zero published at the last epoch equals one process on the same probe and weights
    for kind in ("metrics", "sanity"):
        published = torch.load(tmp_path / f"ddp_{kind}.pt", weights_only=True)
        assert published["world_size"] == 2
        probe = Probe.from_state_dict(published["probe"])
        model = tiny_model(3)
        model.load_state_dict(published["weights"])
        model.eval()
        pred = model(probe.inputs).argmax(dim=1)
        results = published["results"]
        if kind == "metrics":
            assert results["saliency/deletion_auc"].shape == (5,)  # 3 + 3 rows, padding dropped
            maps = Saliency()(model, probe.inputs, pred)
            torch.testing.assert_close(
                results["saliency/deletion_auc"], deletion_auc(model, probe.inputs, maps, pred, steps=STEPS)
            )
            torch.testing.assert_close(
                results["saliency/pointing_game"], pointing_game(maps, probe.masks), equal_nan=True
            )
        else:
            expected = parameter_randomization(model, probe.inputs, Saliency(), pred).T
            torch.testing.assert_close(results["saliency"], expected, rtol=1e-4, atol=1e-5)

    # the logged curves: the same tags, steps and values as one process; rank zero logs once per epoch
    assert {"xai/metrics/saliency/deletion_auc", "xai/metrics/grad_cam/mask_aupr", "xai/sanity/saliency/mean"} <= set(
        single
    )
    assert set(ddp) == set(single)
    for tag, points in single.items():
        assert len(points) == EPOCHS, (tag, points)
        assert len(ddp[tag]) == EPOCHS, (tag, ddp[tag])  # rank zero only, once per epoch
        assert [s for s, _ in ddp[tag]] == [s for s, _ in points], tag
        torch.testing.assert_close(
            torch.tensor([v for _, v in ddp[tag]]), torch.tensor([v for _, v in points]), rtol=0, atol=1e-5,
            msg=lambda m, tag=tag: f"{tag}: {m}",
        )  # fmt: skip
    # the curves move between the epochs (the weights drift), so equal curves are not constants
    assert single["xai/metrics/saliency/deletion_auc"][0][1] != single["xai/metrics/saliency/deletion_auc"][1][1]
