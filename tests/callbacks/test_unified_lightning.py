"""Both Lightning packages: the callbacks under `lightning.pytorch.Trainer`, and the demo classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning.pytorch")

from lightning_xai.attribution import GradCAM  # noqa: E402
from lightning_xai.callbacks import SaliencyMonitor  # noqa: E402
from tests.helpers.logs import read_tensorboard  # noqa: E402


def test_monitor_under_the_unified_lightning_trainer(tmp_path: Path) -> None:
    from lightning_xai.unified import ShapesClassifier, ShapesDataModule

    L.seed_everything(0)
    dm = ShapesDataModule(batch_size=16, num_train=48, num_val=16, image_size=16, num_classes=3)
    model = ShapesClassifier(num_classes=3, width=4)
    monitor = SaliencyMonitor([GradCAM()], num_samples=2)
    logger = L.loggers.TensorBoardLogger(str(tmp_path))
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=[monitor],
        logger=logger,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, datamodule=dm)
    logger.finalize("success")
    acc = read_tensorboard(logger.log_dir)[0]
    assert "xai/saliency/grad_cam/overlays" in acc.Tags()["images"]
    assert torch.isfinite(monitor.history()[0][1]).all()


def test_pytorch_lightning_classes_are_not_accepted_by_the_unified_trainer_but_ours_are() -> None:
    from lightning_xai.data import ShapesDataModule as PLDataModule
    from lightning_xai.unified import ShapesDataModule

    assert isinstance(ShapesDataModule(), L.LightningDataModule)
    assert not isinstance(PLDataModule(), L.LightningDataModule)
