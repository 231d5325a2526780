"""Every tag every monitor logs lives under ``xai/<monitor>/``, lower case: one fit with every monitor
attached (and one with the prototype monitors), read back from TensorBoard."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.attribution import GradCAM, IntegratedGradients
from lightning_xai.callbacks import (
    DissectionMonitor,
    MetricsMonitor,
    PatternEstimator,
    PrototypeMonitor,
    PrototypePush,
    SaliencyMonitor,
    SanityCheckMonitor,
    ShortcutAlarm,
    TCAVMonitor,
    TracInMonitor,
)
from tests.callbacks.test_prototypes import fit_proto
from tests.helpers.data import tiny_concepts
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit

pytestmark = pytest.mark.slow

GROUPS = {"saliency", "metrics", "sanity", "tcav", "dissection", "tracin", "prototypes", "patterns", "shortcut"}
TAG = re.compile(r"^xai/([a-z_]+)/[a-z0-9_./<>-]+$")


def _lightning_own(tag: str) -> bool:
    """Tags the LightningModule or Lightning itself logs (not ours)."""
    return tag in {"epoch", "hp_metric"} or tag.split("/")[0] in {"train", "val", "test"}


def _all_tags(log_dir: Path) -> dict[str, set[str]]:
    kinds: dict[str, set[str]] = {"images": set(), "scalars": set(), "histograms": set(), "tensors": set()}
    for acc in read_tensorboard(log_dir):
        tags = acc.Tags()
        for kind in kinds:
            kinds[kind] |= set(tags.get(kind, []))
    # text summaries are stored as "<tag>/text_summary"; embeddings are listed in the projector config
    kinds["tensors"] = {t.removesuffix("/text_summary") for t in kinds["tensors"]}
    kinds["embeddings"] = set()
    for config in log_dir.rglob("projector_config.pbtxt"):
        kinds["embeddings"] |= set(re.findall(r'tensor_name:\s*"([^"]+?)(?::\d+)?"', config.read_text()))
    return kinds


def _check(kinds: dict[str, set[str]]) -> set[str]:
    ours = set()
    for kind, tags in kinds.items():
        for tag in tags:
            if _lightning_own(tag):
                continue
            match = TAG.match(tag)
            assert match and match.group(1) in GROUPS, f"{kind} tag {tag!r} is not under xai/<monitor>/"
            ours.add(tag)
    return ours


def test_every_monitor_logs_under_xai(tmp_path: Path) -> None:
    concepts = {k: v.images for k, v in tiny_concepts(6).items()}
    monitors = [
        SaliencyMonitor([GradCAM(), IntegratedGradients(n_steps=4)], num_samples=3, synchronous_logging=True),
        MetricsMonitor(["saliency"], metrics=["deletion_auc", "pointing_game"], num_samples=3),
        SanityCheckMonitor(["saliency"], num_samples=3),
        TCAVMonitor(concepts, layers=["features.8"], target_classes=[0], n_random=2, num_samples=4),
        DissectionMonitor(tiny_concepts(6, ("circle", "red")), layer="features.8", quantile=0.02),
        TracInMonitor(num_samples=2, num_top_examples=4),
        PatternEstimator(initial_batches=0),
        SaliencyMonitor(["saliency"], num_samples=2, max_overhead=1e-9),  # over budget: skipped_runs
        ShortcutAlarm(num_samples=6, patience=1, threshold=1e-6, min_cluster_size=1),  # alarms: scalars and picture
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, monitors, logger=TensorBoardLogger(str(tmp_path), name="tb"), max_epochs=2)
    ours = _check(_all_tags(tmp_path))
    groups = {TAG.match(t).group(1) for t in ours}
    assert groups == GROUPS - {"prototypes"}, groups  # every monitor logged something, each in its group
    assert any(t.endswith("/skipped_runs") for t in ours)
    assert "xai/saliency/grad_cam/overlays" in ours and "xai/saliency/probe_table" in ours


def test_the_prototype_monitors_log_under_xai(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_proto(
            tmp_path,
            [PrototypePush(every_n_epochs=1, synchronous_logging=True), PrototypeMonitor(num_samples=2)],
            logger=TensorBoardLogger(str(tmp_path), name="tb"),
            max_epochs=2,
        )
    ours = _check(_all_tags(tmp_path))
    assert {"xai/prototypes/gallery", "xai/prototypes/push/mean_shift", "xai/prototypes/vectors"} <= ours


def test_a_stray_tag_is_caught() -> None:
    with pytest.raises(AssertionError, match="tcav/table"):
        _check({"tensors": {"tcav/table"}})
    with pytest.raises(AssertionError, match="PrototypePush"):
        _check({"scalars": {"xai/PrototypePush/mean_shift"}})
