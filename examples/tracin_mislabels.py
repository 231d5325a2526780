"""Find mislabelled training examples with TracIn self-influence (Pruthi et al. 2020).

scikit-learn's digits (1,797 real 8x8 images, 10 classes; no download): 10% of the training labels
are flipped to another class, and a small perceptron is trained with Lightning and SGD (momentum
0.9, constant learning rate) until it has memorised many of them, with a ``TracInMonitor`` that
adds a checkpoint every few epochs to the self-influence sums, online (no checkpoint file). The
training examples are then ranked and inspected from the top:

* TracIn self-influence ``sum_c lr_c |grad L(w_c, z)|^2`` accumulated over the checkpoints;
* TracIn at the last checkpoint only (what a post-hoc tool sees without saved checkpoints);
* the loss of the final model (the usual baseline);
* random order.

The plot shows the fraction of flipped labels found against the fraction of the training set
inspected (10% .. 50%), averaged over ``--seeds`` runs, and is saved to ``docs/tracin_mislabels.png``.

    python examples/tracin_mislabels.py [--epochs 60] [--every 6] [--seeds 3] [--out docs/tracin_mislabels.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lightning_xai.callbacks import TracInMonitor  # noqa: E402
from lightning_xai.influence import TracIn  # noqa: E402

FRACTIONS = [0.1, 0.2, 0.3, 0.4, 0.5]


class DigitsMLP(nn.Module):
    """A two-hidden-layer perceptron over the 64 pixels: wide enough to memorise flipped labels."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.fc = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def load_digits_flipped(seed: int, flip: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images [N,1,8,8] in [0,1], noisy labels, flipped mask)`` of the digits training split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    gen = torch.Generator().manual_seed(seed)
    n_flip = int(round(flip * len(y)))
    flipped = torch.zeros(len(y), dtype=torch.bool)
    flipped[torch.randperm(len(y), generator=gen)[:n_flip]] = True
    shift = torch.randint(1, 10, (len(y),), generator=gen)  # any other class, uniformly
    noisy = torch.where(flipped, (y + shift) % 10, y)
    return x, noisy, flipped


class NoisyDigits(pl.LightningModule):
    """``DigitsMLP`` trained with SGD + momentum at a constant learning rate."""

    def __init__(self, lr: float) -> None:
        super().__init__()
        self.net = DigitsMLP()
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def train(
    x: torch.Tensor, y: torch.Tensor, epochs: int, every: int, seed: int, lr: float, logdir: str
) -> tuple[NoisyDigits, TracInMonitor]:
    """Fit with a ``TracInMonitor`` that adds a checkpoint every ``every`` epochs, online."""
    pl.seed_everything(seed, verbose=False)
    model = NoisyDigits(lr)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(seed))
    monitor = TracInMonitor(
        every_n_epochs=every, gradient_layers=None, num_samples=4, num_top_examples=16, batch_size=256
    )
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[monitor],
        logger=TensorBoardLogger(logdir, name=f"seed{seed}"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    return model.eval(), monitor


def found_curve(scores: torch.Tensor, flipped: torch.Tensor) -> list[float]:
    """Fraction of flipped examples among the top ``f`` fraction of ``scores``, for each ``f``."""
    order = scores.argsort(descending=True)
    return [float(flipped[order[: int(round(f * len(scores)))]].sum()) / float(flipped.sum()) for f in FRACTIONS]


def run(seed: int, epochs: int, every: int, lr: float, logdir: str) -> dict[str, list[float]]:
    x, y, flipped = load_digits_flipped(seed)
    model, monitor = train(x, y, epochs, every, seed, lr, logdir)
    with torch.no_grad():
        loss = F.cross_entropy(model(x), y, reduction="none")
        accuracy_noisy = float((model(x).argmax(1) == y).float().mean())
    assert monitor.self_influence is not None
    self_influence = monitor.self_influence  # accumulated online, one checkpoint every `every` epochs
    last_lr = monitor.checkpoints[-1]["learning_rate"]
    last_only = TracIn(batch_size=256).self_influence(model, [(model.state_dict(), last_lr)], x, y)
    random = torch.rand(len(y), generator=torch.Generator().manual_seed(seed + 100))
    print(
        f"  seed {seed}: training accuracy on the noisy labels {accuracy_noisy:.3f}, "
        f"{len(monitor.checkpoints)} checkpoints"
    )
    return {
        "TracIn self-influence": found_curve(self_influence, flipped),
        "TracIn, last checkpoint only": found_curve(last_only, flipped),
        "loss of the final model": found_curve(loss, flipped),
        "random": found_curve(random, flipped),
    }


def plot(curves: dict[str, np.ndarray], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8), dpi=120)
    styles = {
        "TracIn self-influence": "o-",
        "TracIn, last checkpoint only": "^--",
        "loss of the final model": "s-",
        "random": "x:",
    }
    for name, values in curves.items():
        mean = values.mean(axis=0)
        ax.plot([100 * f for f in FRACTIONS], 100 * mean, styles.get(name, "-"), label=name)
        if values.shape[0] > 1:
            ax.fill_between([100 * f for f in FRACTIONS], 100 * values.min(0), 100 * values.max(0), alpha=0.15)
    ax.set_xlabel("training data inspected (%)")
    ax.set_ylabel("flipped labels found (%)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, np.ndarray]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=6, help="keep a checkpoint every n epochs")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--logdir", default=None, help="TensorBoard logs of the monitor (default: a temporary folder)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs" / "tracin_mislabels.png"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        runs = [run(seed, args.epochs, args.every, args.lr, args.logdir or tmp) for seed in range(args.seeds)]
    curves = {name: np.array([r[name] for r in runs]) for name in runs[0]}
    print("\nflipped labels found (mean over seeds) when inspecting the top ...")
    print(f"{'ranking':32s}" + "".join(f"{int(100 * f):>7d}%" for f in FRACTIONS))
    for name, values in curves.items():
        print(f"{name:32s}" + "".join(f"{100 * v:7.1f}%" for v in values.mean(0)))
    title = f"digits, 10% labels flipped, {args.epochs} epochs, mean of {args.seeds} seeds"
    plot(curves, Path(args.out), title)
    print(f"\nplot: {args.out}  ({time.perf_counter() - start:.0f} s)")
    return curves


if __name__ == "__main__":
    main()
