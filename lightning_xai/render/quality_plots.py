"""Line plots for explanation-quality results, drawn with matplotlib's Agg backend into
``[3, H, W]`` float tensors in ``[0, 1]`` (what every sink's ``log_image`` takes).

* :func:`randomization_plot`: similarity to the trained model's maps per randomised layer
  (Adebayo et al. 2018's cascading-randomisation figure), one line per explainer.
* :func:`metric_curve_plot`: one score per explainer over training steps or epochs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["randomization_plot", "metric_curve_plot"]


def _figure(width: float, height: float):  # noqa: ANN202
    from matplotlib.figure import Figure  # Figure without pyplot: no global state, Agg canvas

    fig = Figure(figsize=(width, height), dpi=100)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    return fig


def _figure_to_tensor(fig) -> Tensor:  # noqa: ANN001
    """Render a matplotlib ``Figure`` (Agg canvas) to a ``[3, H, W]`` float tensor in ``[0, 1]``."""
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0


def randomization_plot(
    layers: Sequence[str],
    curves: Mapping[str, Tensor | Sequence[float]],
    *,
    measure: str = "spearman",
    spread: Mapping[str, Tensor | Sequence[float]] | None = None,
    title: str | None = None,
) -> Tensor:
    """The cascading-randomisation curve: x = "original" then each randomised layer (top layer
    first), y = mean similarity of the maps to the trained model's (1 at "original").

    Args:
        layers: Randomised layer names, in randomisation order.
        curves: ``{explainer: [L] mean similarity}``.
        measure: The similarity's name, for the y label.
        spread: Optional ``{explainer: [L] standard deviation}`` drawn as a band.
        title: Figure title.

    Returns:
        ``[3, H, W]`` image tensor.

    Examples:
        >>> img = randomization_plot(["fc", "conv2", "conv1"], {"gradient": [0.5, 0.2, 0.1]})
        >>> img.shape[0], float(img.max()) <= 1.0
        (3, True)
    """
    if not curves:
        raise ValueError("randomization_plot needs at least one curve.")
    fig = _figure(max(5.0, 0.55 * (len(layers) + 1) + 2.5), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(len(layers) + 1)
    for name, values in curves.items():
        ys = np.concatenate([[1.0], np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu())])
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        if spread is not None and name in spread:
            sd = np.concatenate([[0.0], np.asarray(torch.as_tensor(spread[name], dtype=torch.float64).cpu())])
            ax.fill_between(xs, ys - sd, ys + sd, color=line.get_color(), alpha=0.15)
    ax.axhline(0.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xticks(xs)
    ax.set_xticklabels(["original", *layers], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel(f"{measure} similarity to the trained model's maps", fontsize=8)
    ax.set_xlabel("cascading randomisation (top layer first)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_to_tensor(fig)


def metric_curve_plot(
    steps: Sequence[int | float],
    series: Mapping[str, Sequence[float]],
    *,
    ylabel: str,
    xlabel: str = "epoch",
    title: str | None = None,
) -> Tensor:
    """One line per series over ``steps`` (a metric per explainer over training).

    Examples:
        >>> metric_curve_plot([0, 1, 2], {"grad_cam": [0.2, 0.5, 0.7]}, ylabel="pointing game").shape[0]
        3
    """
    if not series:
        raise ValueError("metric_curve_plot needs at least one series.")
    fig = _figure(5.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    for name, values in series.items():
        if len(values) != len(steps):
            raise ValueError(f"Series {name!r} has {len(values)} values for {len(steps)} steps.")
        ax.plot(list(steps), list(values), marker="o", label=name)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _figure_to_tensor(fig)
