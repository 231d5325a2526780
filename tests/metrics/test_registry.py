"""One metric registry, derived from the classes; metrics/ mirrors metrics/functional/."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from torchmetrics import Metric

import lightning_xai.metrics as metrics
import lightning_xai.metrics.functional as functional
from lightning_xai.metrics.evaluate import METRICS
from lightning_xai.metrics.registry import METRIC_CLASSES, _by_name, metric_class

PACKAGE = Path(metrics.__file__).parent


def test_every_exported_metric_class_is_registered_under_its_functions_name():
    classes = {getattr(metrics, n) for n in metrics.__all__ if isinstance(getattr(metrics, n), type)}
    classes = {
        c for c in classes if isinstance(c, type) and issubclass(c, Metric) and c is not metrics.ExplanationMetric
    }
    assert classes == set(METRIC_CLASSES.values())
    for name, cls in METRIC_CLASSES.items():
        assert cls.name == name
        assert callable(getattr(functional, name)), name


def test_the_per_sample_table_is_derived_from_the_classes():
    assert set(METRICS) == {n for n, c in METRIC_CLASSES.items() if c.per_sample is not None}
    for name, spec in METRICS.items():
        cls = METRIC_CLASSES[name]
        assert spec.fn is cls.per_sample
        assert spec.needs_masks is cls.needs_masks
        assert spec.higher_is_better is bool(cls.higher_is_better)
    assert {n for n, s in METRICS.items() if s.needs_masks} == {"pointing_game", "mask_aupr", "mask_mass"}


def test_a_duplicate_or_missing_name_is_refused():
    with pytest.raises(RuntimeError, match="unique `name`"):
        _by_name((metrics.DeletionAUC, metrics.DeletionAUC))
    with pytest.raises(RuntimeError, match="unique `name`"):
        _by_name((metrics.ExplanationMetric,))
    with pytest.raises(ValueError, match="Unknown metric 'nope'"):
        metric_class("nope")


def test_metrics_mirrors_functional_file_for_file():
    public = {p.stem for p in (PACKAGE / "functional").glob("*.py") if not p.stem.startswith("_")}
    public -= {"localisation", "randomisation"}  # deprecated spellings, one release
    assert public <= {p.stem for p in PACKAGE.glob("*.py")}


@pytest.mark.parametrize(("old", "new"), [("localisation", "localization"), ("randomisation", "randomization")])
def test_the_old_module_spelling_still_resolves_with_a_warning(old: str, new: str):
    shim = importlib.import_module(f"lightning_xai.metrics.functional.{old}")
    target = importlib.import_module(f"lightning_xai.metrics.functional.{new}")
    name = "pointing_game" if new == "localization" else "parameter_randomization"
    with pytest.warns(DeprecationWarning, match=f"functional\\.{new}\\.{name}"):
        assert getattr(shim, name) is getattr(target, name)
