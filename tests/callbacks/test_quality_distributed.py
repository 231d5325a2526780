"""MetricsMonitor and SanityCheckMonitor under DDP (ddp_spawn, 2 CPU processes, gloo): the probe is
sharded, the per-sample rows gathered in probe order equal one process on the same weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.attribution import Saliency
from lightning_xai.data.probe import Probe
from lightning_xai.metrics.functional import deletion_auc, parameter_randomization, pointing_game
from tests.callbacks.helpers import fit, read_tensorboard, tiny_model
from tests.callbacks.quality_helpers import RecordingMetricsMonitor, RecordingSanityCheckMonitor

pytestmark = [pytest.mark.ddp, pytest.mark.slow, pytest.mark.numerics]


def test_ddp_spawn_gathers_per_sample_scores_in_probe_order(tmp_path: Path) -> None:
    metrics_file, sanity_file = tmp_path / "metrics.pt", tmp_path / "sanity.pt"
    metrics = RecordingMetricsMonitor(
        str(metrics_file), explainers=["saliency"], metrics=["deletion_auc", "pointing_game"], num_samples=5
    )
    sanity = RecordingSanityCheckMonitor(str(sanity_file), explainers=["saliency"], num_samples=5)
    logger = TensorBoardLogger(str(tmp_path), name="ddp")
    fit(tmp_path, [metrics, sanity], logger=logger, max_epochs=1, strategy="ddp_spawn", devices=2)

    for path in (metrics_file, sanity_file):
        published = torch.load(path, weights_only=True)
        assert published["world_size"] == 2
        probe = Probe.from_state_dict(published["probe"])
        model = tiny_model(3)
        model.load_state_dict(published["weights"])
        model.eval()
        pred = model(probe.inputs).argmax(dim=1)
        results = published["results"]
        if path == metrics_file:
            assert results["saliency/deletion_auc"].shape == (5,)  # 3 + 3 rows, padding dropped
            maps = Saliency()(model, probe.inputs, pred)
            torch.testing.assert_close(results["saliency/deletion_auc"], deletion_auc(model, probe.inputs, maps, pred))
            torch.testing.assert_close(
                results["saliency/pointing_game"], pointing_game(maps, probe.masks), equal_nan=True
            )
        else:
            expected = parameter_randomization(model, probe.inputs, Saliency(), pred).T
            torch.testing.assert_close(results["saliency"], expected, rtol=1e-4, atol=1e-5)

    accs = read_tensorboard(Path(logger.save_dir))
    counts = {}
    for acc in accs:
        for tag in acc.Tags()["scalars"]:
            counts[tag] = counts.get(tag, 0) + len(acc.Scalars(tag))
    assert counts["xai/metrics/saliency/deletion_auc"] == 1  # rank zero only, once
    assert counts["xai/sanity/saliency/mean"] == 1
