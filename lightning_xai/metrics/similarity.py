"""Map similarity as a torchmetrics ``Metric`` class over
:mod:`lightning_xai.metrics.functional.similarity`."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_xai.metrics.base import _FiniteMean
from lightning_xai.metrics.functional.similarity import _map_similarity_update, check_measure

__all__ = [
    "MapSimilarity",
]


class MapSimilarity(_FiniteMean):
    """Mean similarity of maps to reference maps (see
    :func:`~lightning_xai.metrics.functional.map_similarity`)."""

    name = "map_similarity"

    higher_is_better = True

    def __init__(self, measure: str = "spearman", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.measure = check_measure(measure)

    def update(self, maps: Tensor, reference: Tensor) -> None:
        self._accumulate(_map_similarity_update(maps, reference, self.measure))
