"""Every monitor's constructor follows one set of rules (issue "One product"): at most one positional
parameter, the pillar's subject; the same names for the same things; a specific name where a word
would mean different things in different monitors."""

from __future__ import annotations

import inspect

import pytest

import lightning_xai.callbacks as callbacks
from lightning_xai.callbacks import MonitorBase, ProbeMonitor

MONITORS = [
    getattr(callbacks, name)
    for name in callbacks.__all__
    if inspect.isclass(getattr(callbacks, name))
    and issubclass(getattr(callbacks, name), MonitorBase)
    and getattr(callbacks, name) not in (MonitorBase, ProbeMonitor)
]
SUBJECTS = {"explainers", "concepts"}
SHARED = {"every_n_epochs", "every_n_train_steps", "max_overhead", "synchronous_logging"}
PROBE = {"num_samples", "probe", "seed"}
# Names that meant different things in different monitors, or are not Lightning's: never a parameter.
RETIRED = {"every_n_steps", "top_k", "num_inputs", "inputs"}
# A push changes the model on purpose at epoch ends: skipping it for a time budget, or running it
# every n steps, would change training; PrototypeMonitor reads the prototype head's own logits.
# TracIn's steps mode accumulates at every step and logs at epoch ends, where the ranks' sums are
# reduced (its probes have their own period, probe_every_n_train_steps).
EXCEPTIONS = {
    "PrototypePush": {"every_n_train_steps", "max_overhead"},
    "TracInStepsMonitor": {"every_n_train_steps"},
}
NO_OUTPUT = {"PrototypePush", "PrototypeMonitor", "PatternEstimator", "DissectionMonitor"}


def _parameters(cls: type) -> list[inspect.Parameter]:
    return list(inspect.signature(cls.__init__).parameters.values())[1:]


def test_every_exported_monitor_is_checked():
    names = {cls.__name__ for cls in MONITORS}
    assert {"SaliencyMonitor", "TracInMonitor", "TCAVMonitor", "PrototypePush", "PatternEstimator"} <= names


@pytest.mark.parametrize("cls", MONITORS, ids=lambda c: c.__name__)
def test_at_most_one_positional_parameter_and_it_is_the_subject(cls: type):
    positional = [p.name for p in _parameters(cls) if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 1, positional
    assert set(positional) <= SUBJECTS, positional
    assert not [p for p in _parameters(cls) if p.kind is p.VAR_POSITIONAL]


@pytest.mark.parametrize("cls", MONITORS, ids=lambda c: c.__name__)
def test_shared_names_for_shared_things(cls: type):
    names = {p.name for p in _parameters(cls)}
    assert not names & RETIRED, names & RETIRED
    assert SHARED - EXCEPTIONS.get(cls.__name__, set()) <= names
    if issubclass(cls, ProbeMonitor):
        assert PROBE <= names
    if cls.__name__ not in NO_OUTPUT:
        assert "output" in names
    if "layers" in names:  # activation layers only; TracIn's parameter owners have their own name
        assert "Tracin" not in cls.__name__ and "TracIn" not in cls.__name__


def test_pillar_specific_names():
    assert "gradient_layers" in {p.name for p in _parameters(callbacks.TracInMonitor)}
    assert "num_top_examples" in {p.name for p in _parameters(callbacks.TracInMonitor)}
    assert "prototypes_per_image" in {p.name for p in _parameters(callbacks.PrototypeMonitor)}


def test_the_rules_can_fail():
    class Positional(MonitorBase):
        def __init__(self, num_samples: int = 8, every_n_epochs: int = 1) -> None:
            super().__init__(every_n_epochs=every_n_epochs)

        def run(self, trainer, pl_module) -> None:  # pragma: no cover
            pass

    with pytest.raises(AssertionError):
        test_at_most_one_positional_parameter_and_it_is_the_subject(Positional)
    with pytest.raises(AssertionError):
        test_shared_names_for_shared_things(Positional)
