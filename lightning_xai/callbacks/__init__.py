"""Lightning callbacks that run lightning_xai's methods on a schedule and log the results."""

from lightning_xai.callbacks.base import MonitorBase, ProbeMonitor, RunInfo
from lightning_xai.callbacks.patterns import PatternEstimator
from lightning_xai.callbacks.prototypes import PrototypeMonitor, PrototypePush, PrototypeStages
from lightning_xai.callbacks.saliency import SaliencyMonitor

__all__ = [
    "MonitorBase",
    "ProbeMonitor",
    "RunInfo",
    "SaliencyMonitor",
    "PrototypeMonitor",
    "PrototypePush",
    "PrototypeStages",
    "PatternEstimator",
]
