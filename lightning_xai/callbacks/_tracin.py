"""What the two TracIn monitors share: reading the chosen training examples back, packing the
influencers for :func:`render`, and drawing and writing them (checkpoint mode in
:mod:`~lightning_xai.callbacks.tracin`, steps mode in :mod:`~lightning_xai.callbacks.tracin_steps`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.data._utils.collate import default_collate

from lightning_xai.callbacks.base import RunInfo
from lightning_xai.data.probe import Probe, as_targets, split_batch
from lightning_xai.render.images import to_display
from lightning_xai.render.influence import class_name, proponents_grid, self_influence_grid
from lightning_xai.sinks import Sink

__all__ = ["MAX_INFLUENCERS", "influencer_images", "read_examples", "render"]

MAX_INFLUENCERS = 8
"""Most proponents (and opponents) drawn per probe image."""


def read_examples(dataset: Any, loader: Any, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Training inputs and labels at ``indices`` (CPU, float inputs), collated as ``loader`` does
    (default collation without one), read with the RNG untouched."""
    collate = getattr(loader, "collate_fn", None) or default_collate
    with torch.random.fork_rng(devices=[]):
        batch = collate([dataset[int(i)] for i in indices])
    x, y, _ = split_batch(batch)
    return torch.as_tensor(x).detach().cpu().float(), as_targets(y, len(indices))


def influencer_images(images: Tensor, labels: Tensor, t: int, shape: tuple[int, int]) -> dict[str, Tensor]:
    """Split examples read as ``[top (t), proponents, opponents]`` into the ``pro_*``/``opp_*``
    images and labels :func:`render` draws, each reshaped to ``shape`` = ``(probes, k)``."""
    p = shape[0] * shape[1]
    return {
        "pro_images": images[t : t + p].reshape(*shape, *images.shape[1:]),
        "pro_labels": labels[t : t + p].reshape(shape),
        "opp_images": images[t + p :].reshape(*shape, *images.shape[1:]),
        "opp_labels": labels[t + p :].reshape(shape),
    }


def render(
    sinks: Sequence[Sink],
    info: RunInfo,
    probe: Optional[Probe],
    results: dict[str, Tensor],
    class_names: Optional[Sequence[str]],
    *,
    title_suffix: str,
    scalars: dict[str, float],
) -> None:
    """Write the self-influence grid (with ``top_images``), one proponents/opponents grid per
    probe (with ``pro_images`` and probe targets), the self-influence histogram, ``scalars`` and
    the top-self-influence table (an image column with ``top_images``) to every sink."""
    pictures: dict[str, Tensor] = {}
    images = results.get("top_images")
    if images is not None:
        pictures["xai/tracin/self_influence_top"] = self_influence_grid(
            images, results["top_labels"], results["top_scores"], results["top_indices"], class_names=class_names
        )
    if "pro_images" in results and probe is not None and probe.targets is not None:
        for i in range(len(probe)):
            pictures[f"xai/tracin/proponents/{i:02d}"] = proponents_grid(
                probe.inputs[i],
                int(probe.targets[i]),
                results["pro_images"][i],
                results["pro_labels"][i],
                results["pro_scores"][i],
                results["opp_images"][i],
                results["opp_labels"][i],
                results["opp_scores"][i],
                class_names=class_names,
                title=f"probe {i}: proponents (top) and opponents (bottom){title_suffix}",
            )
    rows = [
        [rank, int(index), class_name(int(label), class_names), float(score)]
        + ([to_display(images[rank][None])[0]] if images is not None else [])
        for rank, (index, label, score) in enumerate(
            zip(results["top_indices"], results["top_labels"], results["top_scores"])
        )
    ]
    columns = ["rank", "index", "label", "self_influence"] + (["image"] if images is not None else [])
    for sink in sinks:
        for tag, picture in pictures.items():
            sink.log_image(tag, picture, info.step)
        sink.log_histogram("xai/tracin/self_influence", results["self_influence"], info.step)
        sink.log_scalars(scalars, info.step)
        sink.log_table("xai/tracin/top_self_influence", columns, rows, info.step)
