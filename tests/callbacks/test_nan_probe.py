"""One non-finite probe costs only its own cells and scores: SaliencyMonitor, MetricsMonitor and
SanityCheckMonitor keep every other probe's maps and scores, and the warnings name the explainer,
the probe and whether the input itself was non-finite."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_xai.attribution import GradCAM, IntegratedGradients, Saliency
from lightning_xai.attribution.base import ExplainContext, Explainer
from lightning_xai.callbacks import MetricsMonitor, SaliencyMonitor, SanityCheckMonitor
from lightning_xai.data import ShapesDataset
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit


class LastRowNaN(Explainer):
    """|input|, but NaN for the last probe whose input is finite (a map that fails on a clean input)."""

    registry_name = "last_row_nan"
    signed = False

    def _attribute(self, model: nn.Module, inputs: Tensor, target: Any, ctx: ExplainContext) -> Tensor:
        maps = inputs.detach().abs().sum(dim=1, keepdim=True)
        finite = torch.isfinite(inputs.flatten(1)).all(dim=1).nonzero().flatten()
        if inputs.shape[0] > 1 and len(finite):
            maps[finite[-1]] = float("nan")
        return maps


def _scalars(accs, tag: str) -> list[float]:
    return [e.value for a in accs if tag in a.Tags()["scalars"] for e in a.Scalars(tag)]


def test_one_nan_probe_skips_only_itself(tmp_path: Path) -> None:
    data = ShapesDataset(num_samples=4, image_size=16, num_classes=3, seed=5)
    images = data.images.clone()
    images[2] = float("nan")  # one broken probe image (not the first: the dry run explains probe 0)
    probe = (images, data.labels, data.masks)
    saliency = SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=4), LastRowNaN()], num_samples=4, probe=probe)
    metrics = MetricsMonitor(
        [GradCAM()], metrics=["deletion_auc", "pointing_game"], metric_kwargs={"deletion_auc": {"steps": 4}},
        num_samples=4, probe=probe,
    )  # fmt: skip
    sanity = SanityCheckMonitor([Saliency()], num_samples=4, probe=probe)
    logger = TensorBoardLogger(str(tmp_path), name="nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, [saliency, metrics, sanity], logger=logger, max_epochs=2)
    messages = [str(w.message) for w in caught]

    order = saliency.probe.inputs.cpu()
    bad = [i for i in range(4) if not bool(torch.isfinite(order[i]).all())]
    assert len(bad) == 1
    nan_input = bad[0]
    map_only = max(i for i in range(4) if i != nan_input)  # LastRowNaN's row
    for name in ("grad_cam", "integrated_gradients"):
        assert any(f"explainer {name!r}" in m and f"probe {nan_input} (NaN/inf input)" in m for m in messages), name
    assert any(
        "'last_row_nan'" in m and f"probe {map_only} (NaN/inf map, finite input)" in m and "NaN/inf input" in m
        for m in messages
    )

    accs = read_tensorboard(logger.log_dir)
    for name, count in (("grad_cam", 1.0), ("integrated_gradients", 1.0), ("last_row_nan", 2.0)):
        assert _scalars(accs, f"xai/saliency/{name}/nonfinite") == [count, count]
        entropy = _scalars(accs, f"xai/saliency/{name}/entropy")
        assert len(entropy) == 2 and all(math.isfinite(v) for v in entropy)
        assert len(_scalars(accs, f"xai/saliency/{name}/ssim_prev")) == 1
        assert (
            sum(
                len(a.Images(f"xai/saliency/{name}/overlays"))
                for a in accs
                if f"xai/saliency/{name}/overlays" in a.Tags()["images"]
            )
            == 2
        )
        frames = saliency.history(name)[-1][1]  # [N, 3, H, W] overlays of the last run
        blank = [i for i in range(4) if bool(frames[i].max() == frames[i].min())]
        assert blank == sorted({nan_input} | ({map_only} if name == "last_row_nan" else set())), (name, blank)

    for metric in ("deletion_auc", "pointing_game"):
        assert len(_scalars(accs, f"xai/metrics/grad_cam/{metric}")) == 2, metric  # the other 3 probes' mean
        assert set(_scalars(accs, f"xai/metrics/grad_cam/{metric}/skipped")) <= {1.0}
    assert any(f"probe {nan_input} (NaN/inf input)" in m and "'grad_cam'" in m for m in messages if "scores" in m)
    sanity_tags = [t for a in accs for t in a.Tags()["scalars"] if t.startswith("xai/sanity/saliency/")]
    assert sanity_tags and all(math.isfinite(v) for t in sanity_tags for v in _scalars(accs, t)), (
        "the randomisation curve is the finite probes' mean"
    )
    assert not [m for m in messages if re.search(r"failed.*skipped this run", m)], messages
