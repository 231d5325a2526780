"""The perturbation and surrogate explainers inside SaliencyMonitor: logged, and training untouched."""

from __future__ import annotations

from pathlib import Path

import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.attribution import RISE, ExtremalPerturbation, KernelSHAP, Occlusion
from lightning_xai.callbacks import SaliencyMonitor
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit


def _weights(tmp_path: Path, callbacks: list) -> tuple[dict[str, torch.Tensor], str]:
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    model = fit(tmp_path, callbacks, logger=logger, max_epochs=2)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, logger.log_dir


def test_saliency_monitor_with_perturbation_explainers(tmp_path: Path) -> None:
    reference, _ = _weights(tmp_path / "without", [])
    monitor = SaliencyMonitor(
        [
            Occlusion(window=(4, 4)),
            RISE(n_masks=16, cell_size=4),
            KernelSHAP(n_samples=16, segmentation="grid", segmentation_kwargs={"cell_size": 4}),
            ExtremalPerturbation(n_iter=3, step=4),
        ],
        num_samples=4,
    )
    with_monitor, log_dir = _weights(tmp_path / "with", [monitor])
    for k in reference:
        assert torch.equal(reference[k], with_monitor[k]), f"{k} differs with the monitor attached"
    tags = {tag for acc in read_tensorboard(log_dir) for tag in acc.Tags()["images"]}
    for name in ("occlusion", "rise", "kernel_shap", "extremal_perturbation"):
        assert f"xai/saliency/{name}/overlays" in tags, tags
