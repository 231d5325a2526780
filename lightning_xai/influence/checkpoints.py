"""Light TracIn checkpoints: a model's weights and the learning rate in effect, nothing else.

``TracInMonitor(save_checkpoints=True)`` writes them during training; :class:`~lightning_xai.influence.TracIn`
reads them (:func:`tracin_checkpoints` lists a folder as ``(path, learning_rate)`` pairs), and so does
captum's ``TracInCP`` through ``checkpoints_load_func=load_tracin_checkpoint``.

The file is a plain ``torch.save`` dict, readable with ``torch.load(weights_only=True)``:
``{"state_dict": model.state_dict() on the CPU, "learning_rate": float, "epoch": int, "step": int,
"param_group": int, "layers": list[str] | None}``. The whole state dict is kept, not only the
selected layers': the gradient of a late layer depends on every earlier layer's weights at that
checkpoint, so TracIn cannot be recomputed from the selected layers alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

__all__ = ["load_tracin_checkpoint", "save_tracin_checkpoint", "tracin_checkpoints"]

PathLike = Union[str, "os.PathLike[str]"]


def save_tracin_checkpoint(path: PathLike, model: nn.Module, learning_rate: float, **meta: Any) -> Path:
    """Write ``model``'s weights (on the CPU) and ``learning_rate`` (plus ``meta``) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "learning_rate": float(learning_rate), **meta}, path)
    return path


def load_tracin_checkpoint(model: nn.Module, path: PathLike) -> float:
    """Load a light checkpoint's weights into ``model`` and return its learning rate.

    The signature captum's ``TracInCP(checkpoints_load_func=...)`` expects.

    Examples:
        >>> # TracInCP(model, data, checkpoints=paths, checkpoints_load_func=load_tracin_checkpoint, ...)
    """
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["state_dict"])
    return float(saved["learning_rate"])


def tracin_checkpoints(directory: PathLike) -> list[tuple[str, float]]:
    """The light checkpoints in ``directory`` as ``(path, learning_rate)`` pairs, in file-name
    order (``epoch=003-step=120.pt`` sorts by epoch), ready for :class:`~lightning_xai.influence.TracIn`.

    Raises:
        ValueError: ``directory`` holds no ``*.pt`` file.
    """
    paths = sorted(Path(directory).glob("*.pt"))
    if not paths:
        raise ValueError(f"No TracIn checkpoint (*.pt) in {str(directory)!r}.")
    return [(str(p), float(torch.load(p, map_location="cpu", weights_only=True)["learning_rate"])) for p in paths]
