"""Importable helpers for the concept monitor tests (ddp_spawn pickles what it runs)."""

from __future__ import annotations

from typing import Any

import torch

from lightning_xai.callbacks import DissectionMonitor, TCAVMonitor
from lightning_xai.data import concept_sets


def tiny_concepts(n: int = 8, names: tuple[str, ...] = ("circle", "marker_square")) -> dict[str, Any]:
    return concept_sets(n, image_size=16, num_classes=3, concepts=list(names))


class RecordingTCAVMonitor(TCAVMonitor):
    """Saves what rank zero publishes, the weights and the chosen data (state lives in the children)."""

    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def run(self, trainer, pl_module):  # type: ignore[override]
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self._world = trainer.world_size
        super().run(trainer, pl_module)

    def render(self, sinks, info, packed, vectors, concepts, classes, history):  # type: ignore[override]
        if not self.dry_running:
            torch.save(
                {
                    "packed": packed,
                    "weights": self._weights,
                    "world_size": self._world,
                    "inputs": {k: v.cpu() for k, v in self._inputs.items()},
                    "randoms": [r.cpu() for r in self._randoms],
                },
                self.out_file,
            )
        super().render(sinks, info, packed, vectors, concepts, classes, history)


class RecordingDissectionMonitor(DissectionMonitor):
    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file

    def run(self, trainer, pl_module):  # type: ignore[override]
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self._world = trainer.world_size
        super().run(trainer, pl_module)

    def render(self, sinks, info, result, examples, history):  # type: ignore[override]
        if not self.dry_running:
            torch.save(
                {
                    "iou": result.iou,
                    "thresholds": result.thresholds,
                    "weights": self._weights,
                    "world_size": self._world,
                },
                self.out_file,
            )
        super().render(sinks, info, result, examples, history)
