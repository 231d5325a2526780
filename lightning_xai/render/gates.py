"""A picture of a class-specific gate matrix (filters x classes): which filter serves which class."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_xai.render.tree import figure_to_tensor

__all__ = ["render_gate_matrix"]


def render_gate_matrix(gate: Tensor, class_names: Sequence[str] | None = None, title: str | None = None) -> Tensor:
    """Draw ``G`` ``[K filters, C classes]`` in ``[0, 1]`` as a heat map, filters sorted by the class
    they serve most (then by gate value; filters with every gate closed, <= 0.1, last), with each column's share of open gates (> 0.1) in its label.

    Args:
        gate: ``[K, C]`` gate values.
        class_names: Optional names of the ``C`` classes.
        title: Optional title.

    Returns:
        ``[3, H, W]`` float RGB in ``[0, 1]``.

    Raises:
        ValueError: ``gate`` is not 2-D or the names do not match its columns.

    Examples:
        >>> render_gate_matrix(torch.rand(8, 3)).shape[0]
        3
    """
    from matplotlib.figure import Figure

    if not isinstance(gate, Tensor) or gate.ndim != 2:
        raise ValueError(f"Expected `gate` of shape [K, C], but got {getattr(gate, 'shape', type(gate).__name__)}.")
    g = gate.detach().float().cpu().clamp(0, 1)
    channels, classes = g.shape
    names = list(class_names) if class_names is not None else [str(c) for c in range(classes)]
    if len(names) != classes:
        raise ValueError(f"Expected {classes} class names, but got {len(names)}.")
    best = torch.where(g.amax(dim=1) > 0.1, g.argmax(dim=1), classes)  # closed filters last
    order = sorted(range(channels), key=lambda k: (int(best[k]), -float(g[k].max())))
    g = g[torch.tensor(order)]
    fig = Figure(figsize=(1.0 + 0.6 * classes, 1.2 + 0.12 * channels), dpi=80)
    ax = fig.add_axes((0.25, 0.12, 0.6, 0.78))
    im = ax.imshow(g.numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    open_share = (g > 0.1).float().mean(dim=0)
    ax.set_xticks(range(classes), [f"{n}\n{float(s):.0%}" for n, s in zip(names, open_share)], fontsize=7)
    ax.set_yticks([])
    ax.set_ylabel(f"{channels} filters (sorted by class)", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.08)
    if title:
        ax.set_title(title, fontsize=8)
    return figure_to_tensor(fig)
