"""Pattern files for the shared test models (PatternNet / PatternAttribution need patterns per model)."""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import torch

from lightning_xai.attribution.propagation import estimate_patterns
from tests.helpers.models import make

_DIR = Path(tempfile.mkdtemp(prefix="lightning-xai-patterns-"))


@cache
def pattern_file(model_name: str) -> str:
    """The path of patterns estimated for ``make(model_name)`` on a few random batches."""
    model, x = make(model_name)
    gen = torch.Generator().manual_seed(7)
    batches = [torch.rand((16, *x.shape[1:]), generator=gen) for _ in range(2)]
    path = _DIR / f"{model_name}.pt"
    torch.save(estimate_patterns(model, batches), path)
    return str(path)
