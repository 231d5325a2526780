"""Pictures of training-data influence: the examples with the highest self-influence (mislabel
candidates) and, per test image, its proponents and opponents. Pure tensor/PIL; no Lightning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.render.images import annotated_grid, to_display

__all__ = ["class_name", "proponents_grid", "self_influence_grid"]


def class_name(index: int, class_names: Sequence[str] | None) -> str:
    """``class_names[index]`` when given and in range, else the index as text."""
    if class_names is not None and 0 <= index < len(class_names):
        return str(class_names[index])
    return str(index)


def _check_rows(name: str, images: Tensor, *others: Tensor) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4:
        raise ValueError(f"Expected `{name}` to be [N, C, H, W] images, but got {getattr(images, 'shape', images)!r}.")
    for other in others:
        if other.shape[0] != images.shape[0]:
            raise ValueError(
                f"Expected one label and score per image in `{name}` ({images.shape[0]}), but got {other.shape[0]}."
            )


def self_influence_grid(
    images: Tensor,
    labels: Tensor,
    scores: Tensor,
    indices: Tensor,
    class_names: Sequence[str] | None = None,
    predictions: Tensor | None = None,
    ncols: int = 8,
    title: str | None = "highest self-influence (mislabel candidates)",
) -> Tensor:
    """Training images ranked by self-influence, captioned with index, label and score.

    Args:
        images: ``[N, C, H, W]`` training images (any range; shown min-max scaled).
        labels: ``[N]`` their (possibly wrong) training labels.
        scores: ``[N]`` self-influence scores.
        indices: ``[N]`` their indices in the training set.
        class_names: Optional names of the classes.
        predictions: Optional ``[N]`` current predictions, shown as ``pred``.
        ncols: Tiles per row.
        title: Title over the grid.

    Returns:
        ``[3, H', W']`` RGB in ``[0, 1]``.

    Examples:
        >>> grid = self_influence_grid(torch.rand(3, 1, 8, 8), torch.tensor([1, 2, 3]),
        ...                            torch.tensor([3.0, 2.0, 1.0]), torch.tensor([7, 4, 9]))
        >>> grid.shape[0]
        3
    """
    _check_rows("images", images, labels, scores, indices)
    captions = []
    for i in range(images.shape[0]):
        text = f"#{int(indices[i])} label {class_name(int(labels[i]), class_names)}"
        if predictions is not None:
            text += f"\npred {class_name(int(predictions[i]), class_names)}"
        captions.append(f"{text}\nscore {float(scores[i]):.3g}")
    return annotated_grid(to_display(images.detach().cpu()), captions, ncols=ncols, title=title)


def proponents_grid(
    probe_image: Tensor,
    probe_label: int,
    proponent_images: Tensor,
    proponent_labels: Tensor,
    proponent_scores: Tensor,
    opponent_images: Tensor,
    opponent_labels: Tensor,
    opponent_scores: Tensor,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Tensor:
    """One test image, its proponents (top row) and opponents (bottom row), captioned with label
    and TracIn score.

    Args:
        probe_image: ``[C, H, W]`` the test (probe) image.
        probe_label: Its label.
        proponent_images: ``[k, C, H, W]`` the proponents.
        proponent_labels: ``[k]`` their labels.
        proponent_scores: ``[k]`` their scores.
        opponent_images: ``[k', C, H, W]`` the opponents (``k'`` may differ; ``0`` is fine).
        opponent_labels: ``[k']`` their labels.
        opponent_scores: ``[k']`` their scores.
        class_names: Optional names of the classes.
        title: Title over the grid (default: proponents / opponents).

    Returns:
        ``[3, H', W']`` RGB in ``[0, 1]``.
    """
    _check_rows("proponent_images", proponent_images, proponent_labels, proponent_scores)
    _check_rows("opponent_images", opponent_images, opponent_labels, opponent_scores)
    if probe_image.ndim != 3:
        raise ValueError(f"Expected `probe_image` to be [C, H, W], but got {tuple(probe_image.shape)}.")
    k = max(proponent_images.shape[0], opponent_images.shape[0], 1)
    probe = to_display(probe_image.detach().cpu().unsqueeze(0))
    blank = torch.ones_like(probe)
    tiles = [probe]
    captions = [f"test image\nlabel {class_name(int(probe_label), class_names)}"]
    rows = (
        (proponent_images, proponent_labels, proponent_scores),
        (opponent_images, opponent_labels, opponent_scores),
    )
    for row, (images, labels, scores) in enumerate(rows):
        if row == 1:
            tiles.append(blank)
            captions.append("")
        shown = to_display(images.detach().cpu()) if images.shape[0] else probe[:0]
        for i in range(k):
            if i < shown.shape[0]:
                tiles.append(shown[i : i + 1])
                captions.append(f"label {class_name(int(labels[i]), class_names)}\n{float(scores[i]):+.3g}")
            else:
                tiles.append(blank)
                captions.append("")
    return annotated_grid(
        torch.cat(tiles),
        captions,
        ncols=k + 1,
        title=title or "proponents (top row) and opponents (bottom row) of the test image",
    )
