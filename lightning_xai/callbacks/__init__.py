"""Lightning callbacks that run lightning_xai's methods on a schedule and log the results."""

from lightning_xai.callbacks.base import MonitorBase, ProbeMonitor, RunInfo
from lightning_xai.callbacks.dissection import DissectionMonitor
from lightning_xai.callbacks.patterns import PatternEstimator
from lightning_xai.callbacks.prototypes import PrototypeMonitor, PrototypePush, PrototypeStages
from lightning_xai.callbacks.quality import MetricsMonitor, SanityCheckMonitor
from lightning_xai.callbacks.report import XAIReport
from lightning_xai.callbacks.saliency import SaliencyMonitor
from lightning_xai.callbacks.shortcut import ShortcutAlarm
from lightning_xai.callbacks.tcav import TCAVMonitor
from lightning_xai.callbacks.tracin import TracInMonitor
from lightning_xai.callbacks.tracin_steps import TracInStepsMonitor

__all__ = [
    "DissectionMonitor",
    "MetricsMonitor",
    "MonitorBase",
    "PatternEstimator",
    "ProbeMonitor",
    "PrototypeMonitor",
    "PrototypePush",
    "PrototypeStages",
    "RunInfo",
    "SaliencyMonitor",
    "SanityCheckMonitor",
    "ShortcutAlarm",
    "TCAVMonitor",
    "TracInMonitor",
    "TracInStepsMonitor",
    "XAIReport",
]
