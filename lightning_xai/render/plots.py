"""Plots as ``[3, H, W]`` tensors (matplotlib, Agg backend): TCAV bar charts and score histories,
and Network Dissection detector counts.

Insignificant TCAV scores are drawn, never dropped: grey and hatched, so a reader sees both the
score and that it may be noise.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["figure_to_tensor", "tcav_bar_chart", "tcav_history_plot", "detector_count_plot"]

_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def figure_to_tensor(fig, dpi: int = 100) -> Tensor:
    """Render a matplotlib figure to a ``[3, H, W]`` float tensor in ``[0, 1]`` and close it."""
    plt = _pyplot()
    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="raw", dpi=dpi, facecolor="white")
        width, height = (int(round(v * dpi)) for v in fig.get_size_inches())
        data = np.frombuffer(buffer.getvalue(), dtype=np.uint8)
        rgba = data.reshape(-1, width, 4) if data.size != height * width * 4 else data.reshape(height, width, 4)
        return torch.from_numpy(rgba[..., :3].copy()).permute(2, 0, 1).float() / 255.0
    finally:
        plt.close(fig)


def tcav_bar_chart(
    scores: Tensor,
    errors: Tensor,
    significant: Tensor,
    groups: Sequence[str],
    bars: Sequence[str],
    title: str = "TCAV",
    random_means: Tensor | None = None,
    random_stds: Tensor | None = None,
    ylabel: str = "TCAV score",
    chance: float | None = 0.5,
) -> Tensor:
    """The paper's summary picture: one group of bars per class (or layer), one bar per concept.

    Args:
        scores: ``[G, K]`` mean TCAV scores (groups x bars).
        errors: ``[G, K]`` error-bar half-widths (the standard deviation over random runs).
        significant: ``[G, K]`` bool; insignificant bars are grey and hatched.
        groups: ``G`` group labels (x axis).
        bars: ``K`` bar labels (legend).
        title: Title.
        random_means: Optional ``[G, K]`` mean random-vs-random scores, drawn as short black ticks
            (in the legend: "random CAVs").
        random_stds: Optional ``[G, K]`` their standard deviations, a grey box around each tick.
        ylabel: Label of the y axis (the statistic).
        chance: Where to draw the dashed "no effect" line (0.5 for sign counts, 0 for statistics
            centred on 0; ``None``: none). The y range is ``[0, 1.05]`` when every value lies in
            it, otherwise fitted to the bars and error bars.

    Returns:
        A ``[3, H, W]`` image in ``[0, 1]``.

    Examples:
        >>> img = tcav_bar_chart(torch.tensor([[0.9, 0.4]]), torch.tensor([[0.05, 0.2]]),
        ...                      torch.tensor([[True, False]]), ["class 0"], ["stripes", "dots"])
        >>> img.shape[0], float(img.min()) >= 0.0
        (3, True)
    """
    plt = _pyplot()
    scores, errors, significant = scores.float().cpu(), errors.float().cpu(), significant.bool().cpu()
    g, k = scores.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 + 0.9 * g * max(k, 1) * 0.6), 3.2))
    width = 0.8 / max(k, 1)
    x = np.arange(g)
    for j in range(k):
        pos = x - 0.4 + width * (j + 0.5)
        colour = _COLORS[j % len(_COLORS)]
        for i in range(g):
            sig = bool(significant[i, j])
            ax.bar(
                pos[i],
                float(scores[i, j]),
                width * 0.9,
                yerr=float(errors[i, j]),
                capsize=3,
                color=colour if sig else "#c8c8c8",
                edgecolor=colour,
                hatch=None if sig else "//",
                label=bars[j] if i == 0 else None,
                linewidth=1.0,
            )
            if random_means is not None:
                mean = float(random_means[i, j])
                if random_stds is not None:
                    sd = float(random_stds[i, j])
                    ax.add_patch(
                        plt.Rectangle(
                            (pos[i] - width * 0.4, mean - sd),
                            width * 0.8,
                            2 * sd,
                            color="black",
                            alpha=0.12,
                            lw=0,
                            label="random CAVs: mean +- sd" if i == 0 and j == 0 else None,
                        )
                    )
                ax.plot(
                    [pos[i] - width * 0.4, pos[i] + width * 0.4],
                    [mean] * 2,
                    color="black",
                    lw=1.2,
                    label="random CAVs: mean" if i == 0 and j == 0 and random_stds is None else None,
                )
    if chance is not None:
        ax.axhline(chance, color="#888888", lw=0.8, ls="--", label=f"no effect ({chance:g})")
    ax.set_xticks(x)
    ax.set_xticklabels(list(groups), fontsize=8)
    values = [scores - errors, scores + errors]
    if random_means is not None:
        sd = random_stds.float().cpu() if random_stds is not None else torch.zeros_like(random_means.float().cpu())
        values += [random_means.float().cpu() - sd, random_means.float().cpu() + sd]
    low, high = min(float(v.min()) for v in values), max(float(v.max()) for v in values)
    if low >= 0.0 and high <= 1.05:
        ax.set_ylim(0.0, 1.05)
    else:
        pad = 0.08 * max(high - low, 1e-12)
        ax.set_ylim(min(low, 0.0) - pad, max(high, 0.0) + pad)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n(grey hatched: not significant)", fontsize=9)
    if k:
        ax.legend(fontsize=7, loc="upper right", ncol=min(k, 3))
    fig.tight_layout()
    return figure_to_tensor(fig)


def tcav_history_plot(
    epochs: Sequence[int],
    curves: Mapping[str, Tensor],
    significant: Mapping[str, Tensor] | None = None,
    extra: Mapping[str, tuple[Sequence[int], Sequence[float]]] | None = None,
    title: str = "TCAV over training",
    band: tuple[Tensor, Tensor] | None = None,
    xlabel: str = "epoch",
    ylabel: str = "TCAV score",
) -> Tensor:
    """TCAV scores over training, one line per curve; insignificant points are hollow.

    Curves that coincide (several at 0 or 1) stay apart: each has its own line style and marker,
    and its points are shifted sideways by a small, distinct offset (at most a fifth of the
    spacing between runs).

    Args:
        epochs: The x values (epochs) of the runs.
        curves: ``{label: [R] scores}``.
        significant: ``{label: [R] bool}``; hollow markers where ``False``.
        extra: ``{label: (xs, ys)}`` further curves in ``[0, 1]`` (validation accuracy), dashed.
        title: Title.
        band: Optional ``([R] low, [R] high)``: a grey band (random-vs-random scores, mean +- sd).
        xlabel: Label of the x axis.
        ylabel: Label of the y axis. The y range is ``[0, 1.05]`` when every value lies in it,
            otherwise fitted to the values.

    Returns:
        A ``[3, H, W]`` image in ``[0, 1]``.

    Examples:
        >>> tcav_history_plot([0, 1], {"marker": torch.tensor([0.5, 0.9])}).shape[0]
        3
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    if band is not None:
        ax.fill_between(
            list(epochs),
            band[0].float().numpy(),
            band[1].float().numpy(),
            color="#bbbbbb",
            alpha=0.5,
            label="random CAVs (mean +- sd)",
        )
    xs_all = np.asarray(list(epochs), dtype=float)
    spacing = float(np.min(np.diff(np.unique(xs_all)))) if len(np.unique(xs_all)) > 1 else 1.0
    count = max(len(curves), 1)
    styles, markers = ("-", "--", "-.", ":"), ("o", "s", "^", "D", "v", "P")
    values_seen: list[float] = []
    for j, (label, values) in enumerate(curves.items()):
        colour = _COLORS[j % len(_COLORS)]
        ys = values.float().cpu().numpy()
        values_seen += ys.tolist()
        xs = xs_all + (j - (count - 1) / 2) * (0.2 * spacing / max(count - 1, 1))
        marker = markers[j % len(markers)]
        ax.plot(xs, ys, color=colour, lw=1.6, ls=styles[j % len(styles)], label=label, alpha=0.9)
        sig = None if significant is None else significant.get(label)
        sig_np = np.ones(len(ys), dtype=bool) if sig is None else sig.bool().cpu().numpy()
        ax.scatter(xs[sig_np], ys[sig_np], color=colour, s=26, marker=marker, zorder=3)
        ax.scatter(xs[~sig_np], ys[~sig_np], facecolors="white", edgecolors=colour, s=26, marker=marker, zorder=3)
    for j, (label, (xs, ys)) in enumerate((extra or {}).items()):
        values_seen += list(ys)
        ax.plot(list(xs), list(ys), color="#444444" if j == 0 else _COLORS[-1 - j], ls="--", lw=1.5, label=label)
    if band is not None:
        values_seen += band[0].float().tolist() + band[1].float().tolist()
    low, high = (min(values_seen), max(values_seen)) if values_seen else (0.0, 1.0)
    if low >= 0.0 and high <= 1.05:
        ax.set_ylim(-0.03, 1.05)
    else:
        pad = 0.08 * max(high - low, 1e-12)
        ax.set_ylim(min(low, 0.0) - pad, max(high, 0.0) + pad)
        ax.axhline(0.0, color="#888888", lw=0.8, ls="--")
    ax.set_ylabel(ylabel)
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title}\n(hollow: not significant)", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_tensor(fig)


def detector_count_plot(epochs: Sequence[int], counts: Mapping[str, Sequence[int]], title: str = "Detectors") -> Tensor:
    """Number of detector units per concept over training (Network Dissection).

    Examples:
        >>> detector_count_plot([0, 1], {"circle": [0, 2]}).shape[0]
        3
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.0))
    for j, (label, values) in enumerate(counts.items()):
        ax.plot(list(epochs), list(values), marker="o", color=_COLORS[j % len(_COLORS)], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("detector units")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return figure_to_tensor(fig)
