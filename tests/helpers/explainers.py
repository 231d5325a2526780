"""Explainers that misbehave on purpose."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import ExplainContext, Explainer


class NaNExplainer(Explainer):
    """Returns NaN maps on every call after the first (the dry run), to test that training goes on."""

    registry_name = "test_nan"
    region = True
    signed = False

    def __init__(self) -> None:
        self._calls = 0

    def _attribute(self, model: nn.Module, inputs: Tensor, target: Any, ctx: ExplainContext) -> Tensor:
        self._calls += 1
        return torch.full((inputs.shape[0], 1, *inputs.shape[-2:]), float("nan"))
