"""Trainer settings for tiny CPU fits, and a fit of the demo classifier on tiny shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from lightning_xai.demo import ShapesClassifier
from tests.helpers.data import tiny_datamodule
from tests.helpers.lightning_modules import tiny_model


def trainer_kwargs(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Two deterministic CPU epochs, logging every step, without checkpoints, progress bar or summary."""
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(tmp_path),
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        deterministic=True,
    )
    kwargs.update(overrides)
    return kwargs


def trainer(tmp_path: Path, **overrides: Any) -> pl.Trainer:
    """A one-epoch CPU Trainer without a logger (``trainer_kwargs`` otherwise, not deterministic)."""
    return pl.Trainer(
        **trainer_kwargs(tmp_path, **{"max_epochs": 1, "logger": False, "deterministic": None, **overrides})
    )


def fit(
    tmp_path: Path, callbacks: list[pl.Callback], seed: int = 0, dm_kwargs: dict | None = None, **overrides: Any
) -> ShapesClassifier:
    """Seeds, then fits ``tiny_model`` on ``tiny_datamodule(**dm_kwargs)`` with ``callbacks`` and
    ``trainer_kwargs(tmp_path, **overrides)``; finalizes the loggers (so their files can be read back)."""
    pl.seed_everything(seed, verbose=False)
    dm = tiny_datamodule(**(dm_kwargs or {}))
    model = tiny_model(dm.num_classes)
    trainer = pl.Trainer(callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model, datamodule=dm)
    for logger in trainer.loggers:
        logger.finalize("success")
    return model
