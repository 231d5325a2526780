"""MetricsMonitor and SanityCheckMonitor log the same curves under a 2-process ``ddp_spawn`` Trainer
(gloo, CPU) as in a one-process Trainer, on the same probe and the same weights.

The weights must be identical when the monitors run, whatever the number of processes: the model
below never learns from data (its loss is a zero that touches no batch, so Adam leaves it, its
BatchNorm statistics and its dropout untouched) but drifts at the start of every epoch by a fixed
seeded amount, so the logged curves change over epochs, identically in both runs. Both runs take
the same number of steps per epoch (``limit_train_batches``), so the logged steps match too."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor

from lightning_xai.callbacks import MetricsMonitor, SanityCheckMonitor
from lightning_xai.demo import ShapesClassifier
from tests.callbacks.helpers import read_tensorboard, tiny_datamodule, trainer_kwargs

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.numerics]

EPOCHS = 2


class DriftingClassifier(ShapesClassifier):
    """Learns nothing from data; its weights move by a seeded, data-independent step per epoch."""

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return sum((p * 0.0).sum() for p in self.parameters())  # zero gradients, no forward

    def on_train_epoch_start(self) -> None:
        gen = torch.Generator().manual_seed(100 + self.current_epoch)
        with torch.no_grad():
            for p in self.parameters():
                p.add_(0.5 * p.std().nan_to_num(0.0) * torch.randn(p.shape, generator=gen))


def _monitors() -> list[pl.Callback]:
    metrics = MetricsMonitor(
        ["saliency", "grad_cam"],
        metrics=["deletion_auc", "insertion_auc", "pointing_game", "mask_aupr", "mask_mass"],
        metric_kwargs={"deletion_auc": {"steps": 8}, "insertion_auc": {"steps": 8}},
        num_samples=5,  # 3 + 3 rows on two ranks: the padding row is dropped
    )
    sanity = SanityCheckMonitor(["saliency", "grad_cam"], num_samples=5)
    return [metrics, sanity]


def _run(tmp_path: Path, name: str, **overrides: object) -> dict[str, list[tuple[int, float]]]:
    pl.seed_everything(0, verbose=False)
    dm = tiny_datamodule()
    model = DriftingClassifier(num_classes=dm.num_classes, width=4, dropout=0.25)
    logger = TensorBoardLogger(str(tmp_path), name=name)
    kwargs = trainer_kwargs(tmp_path, max_epochs=EPOCHS, limit_train_batches=2, logger=logger, **overrides)
    pl.Trainer(callbacks=_monitors(), **kwargs).fit(model, datamodule=dm)
    logger.finalize("success")
    curves: dict[str, list[tuple[int, float]]] = {}
    for acc in read_tensorboard(Path(tmp_path) / name):
        for tag in acc.Tags()["scalars"]:
            if tag.startswith("xai/"):
                curves.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return {tag: sorted(points) for tag, points in curves.items()}


def test_monitors_log_the_same_curves_on_two_ranks_as_in_one_process(tmp_path: Path) -> None:
    single = _run(tmp_path, "single")
    ddp = _run(tmp_path, "ddp", strategy="ddp_spawn", devices=2)
    assert {"xai/metrics/saliency/deletion_auc", "xai/metrics/grad_cam/mask_aupr", "xai/sanity/saliency/mean"} <= set(
        single
    )
    assert set(ddp) == set(single)
    for tag, points in single.items():
        assert len(points) == EPOCHS, (tag, points)  # once per epoch, by rank zero only
        assert [s for s, _ in ddp[tag]] == [s for s, _ in points], tag
        torch.testing.assert_close(
            torch.tensor([v for _, v in ddp[tag]]), torch.tensor([v for _, v in points]), rtol=0, atol=1e-5,
            msg=lambda m, tag=tag: f"{tag}: {m}",
        )  # fmt: skip
    # the curves move between the epochs (the weights drift), so equal curves are not constants
    assert single["xai/metrics/saliency/deletion_auc"][0][1] != single["xai/metrics/saliency/deletion_auc"][1][1]
