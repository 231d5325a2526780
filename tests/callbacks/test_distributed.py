"""SaliencyMonitor under DDP: 2 CPU processes (gloo) via ddp_spawn (plain `ddp` re-runs pytest)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.attribution import GradCAM
from lightning_xai.data.probe import Probe
from tests.helpers.callbacks import RecordingSaliencyMonitor
from tests.helpers.lightning_modules import tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.numerics]


def test_ddp_spawn_shards_gathers_and_logs_once(tmp_path: Path) -> None:
    out_file = tmp_path / "published.pt"
    monitor = RecordingSaliencyMonitor(str(out_file), explainers=[GradCAM()], num_samples=5)
    logger = TensorBoardLogger(str(tmp_path), name="ddp")
    fit(tmp_path, [monitor], logger=logger, max_epochs=1, strategy="ddp_spawn", devices=2)

    published = torch.load(out_file, weights_only=True)
    assert published["world_size"] == 2
    probe = Probe.from_state_dict(published["probe"])
    assert len(probe) == 5
    maps = published["results"]["grad_cam"]
    assert maps.shape[0] == 5  # 3 + 3 computed on two ranks, padding dropped
    # the gathered maps are in probe order and equal a single-process computation on the same weights
    model = tiny_model(3)
    model.load_state_dict(published["weights"])
    model.eval()
    pred = model(probe.inputs).argmax(dim=1)
    torch.testing.assert_close(maps, GradCAM()(model, probe.inputs, pred), rtol=1e-4, atol=1e-5)

    # only rank zero wrote: one event file, each image once
    accs = read_tensorboard(Path(logger.save_dir))
    counts = {}
    for acc in accs:
        for tag in acc.Tags()["images"]:
            counts[tag] = counts.get(tag, 0) + len(acc.Images(tag))
    assert counts["xai/saliency/grad_cam/overlays"] == 1
    assert sorted(t for t in counts if "evolution" in t) == [
        f"xai/saliency/grad_cam/evolution/{i:02d}" for i in range(5)
    ]
    assert all(v == 1 for v in counts.values()), counts
