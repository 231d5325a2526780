"""Importable recording monitors for the DDP test (ddp_spawn pickles what it runs)."""

from __future__ import annotations

from typing import Any

import torch

from lightning_xai.callbacks import MetricsMonitor, SanityCheckMonitor


class _Recording:
    """Saves what rank zero publishes, with the weights it was computed on, to ``out_file``."""

    out_file: str

    def run(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        self._weights = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self._world = trainer.world_size
        super().run(trainer, pl_module)  # type: ignore[misc]

    def render(self, sinks, info, probe, results):  # type: ignore[no-untyped-def]
        if not self.dry_running:  # type: ignore[attr-defined]
            torch.save(
                {
                    "results": {k: v.cpu() for k, v in results.items()},
                    "probe": probe.to("cpu").state_dict(),
                    "weights": self._weights,
                    "world_size": self._world,
                },
                self.out_file,
            )
        super().render(sinks, info, probe, results)  # type: ignore[misc]


class RecordingMetricsMonitor(_Recording, MetricsMonitor):
    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file


class RecordingSanityCheckMonitor(_Recording, SanityCheckMonitor):
    def __init__(self, out_file: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file
