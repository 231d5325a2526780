"""A picture of a soft decision tree: inner-node filters as images, leaf class distributions as bars,
and the path one input takes highlighted. Pure tensors in, an RGB tensor out (matplotlib Agg,
object-oriented: no ``pyplot``, nothing global touched), so a callback can render from CPU copies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_xai._validation import check_int

__all__ = ["figure_to_tensor", "render_tree"]

_PATH_COLOR = "#d62728"


def figure_to_tensor(fig: object) -> Tensor:
    """Rasterise a matplotlib ``Figure`` (Agg) to a float RGB tensor ``[3, H, W]`` in ``[0, 1]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # type: ignore[arg-type]
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


def _node_xy(level: int, index: int, levels: int) -> tuple[float, float]:
    """Centre of the ``index``-th node of ``level`` (0 = root) in a ``[0, 1] x [0, 1]`` canvas."""
    return (index + 0.5) / 2**level, 1.0 - (level + 0.6) / (levels + 0.2)


def render_tree(
    filters: Tensor,
    leaf_probs: Tensor,
    image_shape: Sequence[int],
    path_probs: Tensor | None = None,
    image: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    max_depth: int = 4,
    title: str | None = None,
) -> Tensor:
    """Draw a soft decision tree.

    Inner nodes show their filter ``w_i`` reshaped to ``image_shape`` (diverging colours: red
    sends right, blue sends left); leaves show their class distribution as bars, the argmax class
    in the caption. With ``path_probs`` (one input's leaf path probabilities) the edges of the
    maximum-probability path are drawn thick red, every node is captioned with the probability
    of reaching it, and ``image`` (the input) is drawn top left.

    Args:
        filters: ``[2**depth - 1, F]`` inner-node weights, breadth-first order
            (``SoftDecisionTree.inner.weight``).
        leaf_probs: ``[2**depth, C]`` leaf class distributions.
        image_shape: ``(H, W)`` or ``(C, H, W)`` with ``prod == F`` (channels are averaged for display).
        path_probs: Optional ``[2**depth]`` path probabilities of one input.
        image: Optional input to show, ``[H, W]`` or ``[C, H, W]`` (``C`` in 1 or 3).
        class_names: Optional names for the ``C`` classes.
        max_depth: Draw at most this many levels of inner nodes. A deeper tree is drawn as the
            subtree of its last ``max_depth`` levels that the input's most probable path goes
            through (with ``path_probs``), or cut after its top ``max_depth`` levels with no leaves
            (without); the caption says which.
        title: Optional figure title.

    Returns:
        ``[3, H, W]`` float RGB in ``[0, 1]``.

    Raises:
        ValueError: Inconsistent shapes.

    Examples:
        >>> img = render_tree(torch.randn(3, 16), torch.rand(4, 2).softmax(1), (4, 4), torch.tensor([.1, .6, .2, .1]))
        >>> img.shape[0], float(img.min()) >= 0.0
        (3, True)
    """
    from matplotlib.figure import Figure

    max_depth = check_int("max_depth", max_depth, 1)
    filters = filters.detach().float().cpu()
    leaf_probs = leaf_probs.detach().float().cpu()
    n_inner, n_leaves = filters.shape[0], leaf_probs.shape[0]
    depth = int(round(np.log2(n_leaves))) if n_leaves > 0 else 0
    if n_leaves != 2**depth or n_inner != n_leaves - 1 or depth < 1:
        raise ValueError(
            f"Expected `filters` [2**d - 1, F] and `leaf_probs` [2**d, C], but got {tuple(filters.shape)} and "
            f"{tuple(leaf_probs.shape)}."
        )
    shape = tuple(int(s) for s in image_shape)
    if int(np.prod(shape)) != filters.shape[1] or len(shape) not in (2, 3):
        raise ValueError(
            f"Expected `image_shape` (H, W) or (C, H, W) with {filters.shape[1]} elements, but got {shape}."
        )
    if path_probs is not None:
        path_probs = path_probs.detach().float().cpu().reshape(-1)
        if path_probs.numel() != n_leaves:
            raise ValueError(f"Expected `path_probs` with {n_leaves} entries, but got {tuple(path_probs.shape)}.")
    num_classes = leaf_probs.shape[1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"Expected {num_classes} class names, but got {len(names)}.")

    shown = min(depth, max_depth)
    # deeper than max_depth: with a path, draw the bottom max_depth levels of the subtree the input
    # goes through (its leaves included); without one, the top levels (no leaves)
    start, root = 0, 0
    if depth > max_depth and path_probs is not None:
        start, root = depth - max_depth, int(path_probs.argmax()) >> max_depth
    draw_leaves = depth <= max_depth or path_probs is not None
    levels = shown + (1 if draw_leaves else 0)
    width_nodes = 2 ** (levels - 1)
    fig = Figure(figsize=(max(6.0, 1.0 * width_nodes), 1.4 * levels + 0.4), dpi=80)
    canvas = fig.add_axes((0, 0, 1, 1))
    canvas.set_xlim(0, 1)
    canvas.set_ylim(0, 1)
    canvas.axis("off")

    # reach probability of every node (inner nodes then leaves), from the leaf path probabilities
    reach_levels: list[Tensor] = []
    on_path: set[tuple[int, int]] = set()
    if path_probs is not None:
        level_probs = path_probs
        for level in range(depth, -1, -1):
            reach_levels.insert(0, level_probs)
            if level:
                level_probs = level_probs.view(-1, 2).sum(dim=1)
        leaf = int(path_probs.argmax())
        for level in range(depth + 1):
            on_path.add((level, leaf >> (depth - level)))

    box = 0.8 / width_nodes
    box_h = 0.7 / (levels + 0.2)
    maps = filters.view(n_inner, *shape)
    if len(shape) == 3:
        maps = maps.mean(dim=1)
    for level in range(levels):
        absolute = start + level
        for index in range(2**level):
            a_index = root * 2**level + index
            x, y = _node_xy(level, index, levels)
            if level + 1 < levels:
                for child in (2 * index, 2 * index + 1):
                    cx, cy = _node_xy(level + 1, child, levels)
                    hot = (absolute, a_index) in on_path and (absolute + 1, root * 2 ** (level + 1) + child) in on_path
                    canvas.plot(
                        [x, cx],
                        [y - box_h / 2, cy + box_h / 2],
                        color=_PATH_COLOR if hot else "0.6",
                        linewidth=3.0 if hot else 0.8,
                        zorder=1,
                    )
            ax = fig.add_axes((x - box / 2, y - box_h / 2, box, box_h))
            if absolute < depth:
                node = 2**absolute - 1 + a_index
                w = maps[node]
                lim = float(w.abs().max()) or 1.0
                ax.imshow(w.numpy(), cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                probs = leaf_probs[a_index].numpy()
                ax.bar(range(num_classes), probs, color="0.35")
                ax.set_ylim(0, 1)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_xlabel(names[int(probs.argmax())], fontsize=7, labelpad=1)
            if reach_levels:
                ax.set_title(f"{float(reach_levels[absolute][a_index]):.2f}", fontsize=6, pad=1)
            if (absolute, a_index) in on_path:
                for spine in ax.spines.values():
                    spine.set_edgecolor(_PATH_COLOR)
                    spine.set_linewidth(2.0)
    if image is not None:
        img = image.detach().float().cpu()
        if img.ndim == 3 and img.shape[0] == 1:
            img = img[0]
        ax = fig.add_axes((0.01, 1.0 - 1.1 * box_h - 0.01, 1.1 * box_h * 0.8, 1.1 * box_h))
        if img.ndim == 3:
            img = img.permute(1, 2, 0)
            lo, hi = float(img.min()), float(img.max())
            ax.imshow(((img - lo) / max(hi - lo, 1e-12)).numpy())
        else:
            ax.imshow(img.numpy(), cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("input", fontsize=7, pad=1)
    caption = title or ""
    if not draw_leaves:
        caption += f"  (top {shown} of {depth} levels; leaves not drawn)"
    elif start:
        caption += f"  (levels {start}-{depth} of the subtree the input goes through)"
    if caption.strip():
        fig.text(0.5, 0.995, caption.strip(), ha="center", va="top", fontsize=9)
    return figure_to_tensor(fig)
