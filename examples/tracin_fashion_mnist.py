"""Find flipped labels in the real Fashion-MNIST with TracIn at the training steps (Pruthi et al. 2020).

The 60,000 Fashion-MNIST training images from Debian's ``dataset-fashion-mnist`` package (idx
``.gz`` files under /usr/share/datasets/fashion-mnist, read with gzip + numpy; nothing is
downloaded), 10% of the labels flipped to a different, uniformly drawn class (seeded by the run's
seed). A small CNN (two 3x3 convolutions, max pooling, two linear layers; no BatchNorm, no dropout)
is trained with plain SGD (``--lr``, momentum ``--momentum``, default 0: the step TracIn assumes)
and a ``TracInMonitor(mode="steps")`` that accumulates, at every step,
``self_influence[i] += lr_t * |g_t(i)|^2`` over the last linear layer (its default).

For each seed the training set is ranked by

* TracIn self-influence (the monitor's ``self_influence``, dataset order);
* the per-example loss of the final model (on the noisy labels; the usual baseline);
* random order;

and the share of the flipped labels in the top 10% / 20% of each ranking is reported, with the
share of flips the model *memorised* (it predicts the flipped label at the end) and the monitor's
overhead (the same seeded fit without the monitor, timed too, must end with bitwise-equal weights).
``--subset N`` adds a regime where the model memorises flips: the first N images trained for
``--subset-epochs`` epochs at ``--subset-lr``, once with the default head layer and once with
``gradient_layers=None`` (every parameter), ranked the same way.

The same TensorBoard logger is attached to both fits (the monitor logs
``xai/tracin/self_influence_top`` at each epoch end, counted in its overhead).

``--data digits`` runs the same pipeline on scikit-learn's digits (no Fashion-MNIST needed; the
tests use it).

    python examples/tracin_fashion_mnist.py [--seeds 0 1 2] [--epochs 3] [--lr 0.1] [--subset 1000] \
        [--picture docs/tracin_fashion_mnist_top.png] [--json results.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from lightning_xai.callbacks import TracInMonitor  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
TOPS = (0.1, 0.2)
RANKINGS = ("TracIn self-influence", "final loss", "random")


def read_idx(path: Path) -> np.ndarray:
    """One idx file (``.gz``) as a numpy array: big-endian header, a magic number whose last byte is
    the number of dimensions, one uint32 per dimension, then unsigned bytes."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    if data[2] != 0x08:
        raise ValueError(f"{path}: expected unsigned-byte idx data (type 0x08), got {data[2]:#x}")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion(directory: Path = FASHION_DIR) -> tuple[Tensor, Tensor, list[str]]:
    """The Fashion-MNIST training split: ``[60000, 1, 28, 28]`` in ``[0, 1]`` and ``[60000]`` labels."""
    images = read_idx(directory / "train-images-idx3-ubyte.gz")
    labels = read_idx(directory / "train-labels-idx1-ubyte.gz")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float() / 255.0
    return x, torch.from_numpy(labels.astype(np.int64)), FASHION_CLASSES


def load_digits() -> tuple[Tensor, Tensor, list[str]]:
    """scikit-learn's 1,797 digits: ``[N, 1, 8, 8]`` in ``[0, 1]`` and their labels (ships offline)."""
    from sklearn.datasets import load_digits as sk_digits

    digits = sk_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(digits.target, dtype=torch.long), [str(i) for i in range(10)]


def flip_labels(y: Tensor, seed: int, fraction: float = 0.1, num_classes: int = 10) -> tuple[Tensor, Tensor]:
    """``(noisy labels, flipped mask)``: exactly ``round(fraction * N)`` labels, chosen with ``seed``,
    each moved to one of the other ``num_classes - 1`` classes uniformly."""
    gen = torch.Generator().manual_seed(seed)
    flipped = torch.zeros(len(y), dtype=torch.bool)
    flipped[torch.randperm(len(y), generator=gen)[: int(round(fraction * len(y)))]] = True
    shift = torch.randint(1, num_classes, (len(y),), generator=gen)
    return torch.where(flipped, (y + shift) % num_classes, y), flipped


class SmallCNN(nn.Module):
    """conv3x3(16)-ReLU-pool2, conv3x3(32)-ReLU-pool2, Linear(64)-ReLU, Linear(10): about 0.1M
    parameters for 28x28 inputs, every layer one the steps mode counts."""

    def __init__(self, size: int, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.hidden = nn.Sequential(nn.Linear(32 * (size // 4) ** 2, 64), nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.hidden(self.features(x)))


class NoisyClassifier(pl.LightningModule):
    """``SmallCNN`` on the noisy labels, mean cross-entropy, ``torch.optim.SGD(lr, momentum)``."""

    def __init__(self, size: int, lr: float, momentum: float) -> None:
        super().__init__()
        self.net = SmallCNN(size)
        self.lr, self.momentum = lr, momentum

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def fit(
    x: Tensor,
    y: Tensor,
    seed: int,
    args: argparse.Namespace,
    monitor: Optional[TracInMonitor],
    epochs: int,
    lr: float,
    name: str,
) -> tuple[NoisyClassifier, float]:
    """One seeded fit (shuffled batches of ``args.batch_size``); returns the model and the seconds
    ``trainer.fit`` took."""
    pl.seed_everything(seed, verbose=False)
    model = NoisyClassifier(x.shape[-1], lr, args.momentum)
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch_size, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[monitor] if monitor is not None else [],
        logger=TensorBoardLogger(args.logdir, name=f"seed{seed}_{name}"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, loader)
    return model.eval(), time.perf_counter() - start


def found(scores: Tensor, flipped: Tensor, top: float) -> float:
    """Share of the flipped examples among the ``top`` fraction of ``scores`` (highest first)."""
    k = int(round(top * len(scores)))
    return float(flipped[scores.argsort(descending=True, stable=True)[:k]].sum()) / max(int(flipped.sum()), 1)


@torch.no_grad()
def final_loss(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 2048) -> tuple[Tensor, Tensor]:
    """Per-example cross-entropy of the final model on the noisy labels, and its predictions."""
    losses, preds = [], []
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        losses.append(F.cross_entropy(logits, y[i : i + batch_size], reduction="none"))
        preds.append(logits.argmax(1))
    return torch.cat(losses), torch.cat(preds)


def compare(self_influence: Tensor, loss: Tensor, flipped: Tensor, seed: int) -> dict[str, list[float]]:
    """Flips found in the top 10% / 20% of each ranking."""
    random = torch.rand(len(loss), generator=torch.Generator().manual_seed(10_000 + seed))
    scores = {"TracIn self-influence": self_influence, "final loss": loss, "random": random}
    return {name: [found(s, flipped, top) for top in TOPS] for name, s in scores.items()}


def run_seed(x: Tensor, y_clean: Tensor, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Fit with and without the monitor on one seed's flips; rankings, memorisation, timing."""
    y, flipped = flip_labels(y_clean, seed)
    monitor = TracInMonitor(mode="steps", num_top_examples=args.top_examples, every_n_epochs=args.log_every)
    model, seconds_with = fit(x, y, seed, args, monitor, args.epochs, args.lr, "monitor")
    assert monitor.self_influence is not None
    loss, pred = final_loss(model, x, y)
    plain, seconds_without = None, None
    if not args.no_baseline:
        plain, seconds_without = fit(x, y, seed, args, None, args.epochs, args.lr, "plain")
        same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))
        if not same:
            raise AssertionError(f"seed {seed}: the weights differ with and without the monitor")
    result: dict[str, Any] = {
        "seed": seed,
        "found": compare(monitor.self_influence, loss, flipped, seed),
        "memorised": float((pred[flipped] == y[flipped]).float().mean()),
        "accuracy_noisy": float((pred == y).float().mean()),
        "accuracy_clean": float((pred[~flipped] == y_clean[~flipped]).float().mean()),
        "seconds_with": seconds_with,
        "seconds_without": seconds_without,
        "steps": monitor.steps,
    }
    if args.subset:
        n = min(args.subset, len(x))
        xs, ys, fs = x[:n], y[:n], flipped[:n]
        sub: dict[str, Any] = {"n": n, "epochs": args.subset_epochs, "lr": args.subset_lr}
        for name, layers in (("last_linear", "last_linear"), ("all", None)):
            # sums are the same whatever the logging schedule: log once, at the end of the long fit
            sub_monitor = TracInMonitor(mode="steps", gradient_layers=layers, every_n_epochs=args.subset_epochs)
            sub_model, sub_seconds = fit(
                xs, ys, seed, args, sub_monitor, args.subset_epochs, args.subset_lr, f"subset_{name}"
            )
            assert sub_monitor.self_influence is not None
            sub_loss, sub_pred = final_loss(sub_model, xs, ys)
            sub[name] = {"found": compare(sub_monitor.self_influence, sub_loss, fs, seed), "seconds": sub_seconds}
        sub["memorised"] = float((sub_pred[fs] == ys[fs]).float().mean())
        result["subset"] = sub
    result["_picture"] = (monitor.self_influence, pred, y, flipped)
    return result


def picture(x: Tensor, result: dict[str, Any], classes: list[str], count: int, out: Path) -> None:
    """The ``count`` highest self-influence images of one run, captioned with index, (noisy) label,
    final prediction and score, saved as a PNG."""
    from lightning_xai.render.images import save_png
    from lightning_xai.render.influence import self_influence_grid

    scores, pred, y, flipped = result["_picture"]
    top = scores.float().topk(count)
    images = F.interpolate(x[top.indices], scale_factor=max(1, 84 // x.shape[-1]), mode="nearest")
    n_flipped = int(flipped[top.indices].sum())
    title = (
        f"highest TracIn self-influence, seed {result['seed']}: {n_flipped} of {count} labels flipped "
        f"(label = training label, pred = final prediction)"
    )
    grid = self_influence_grid(
        images, y[top.indices], top.values, top.indices, classes, pred[top.indices], ncols=8, title=title
    )
    save_png(grid, out)


def summarise(results: list[dict[str, Any]]) -> str:
    """A markdown table of the mean (min-max) over seeds."""

    def cell(values: list[float], percent: bool = True) -> str:
        arr = np.array(values) * (100 if percent else 1)
        unit = "%" if percent else ""
        return f"{arr.mean():.1f}{unit} ({arr.min():.1f}-{arr.max():.1f})"

    lines = ["| ranking | flips in top 10% | flips in top 20% |", "|---|---|---|"]
    for name in RANKINGS:
        lines.append(
            f"| {name} | " + " | ".join(cell([r["found"][name][i] for r in results]) for i in range(len(TOPS))) + " |"
        )
    lines.append("")
    lines.append(f"flips memorised: {cell([r['memorised'] for r in results])}; ")
    lines.append(f"accuracy on the noisy labels: {cell([r['accuracy_noisy'] for r in results])}; ")
    lines.append(f"on the clean (unflipped) examples: {cell([r['accuracy_clean'] for r in results])}")
    if results[0]["seconds_without"] is not None:
        lines.append("")
        lines.append("| seed | fit without monitor (s) | with (s) | overhead |")
        lines.append("|---|---:|---:|---:|")
        for r in results:
            lines.append(
                f"| {r['seed']} | {r['seconds_without']:.1f} | {r['seconds_with']:.1f} | "
                f"{100 * (r['seconds_with'] / r['seconds_without'] - 1):+.1f}% |"
            )
    if "subset" in results[0]:
        sub = results[0]["subset"]
        lines.append("")
        lines.append(f"first {sub['n']} images, {sub['epochs']} epochs, lr {sub['lr']}:")
        lines.append("")
        lines.append("| ranking | flips in top 10% | flips in top 20% | fit (s) |")
        lines.append("|---|---|---|---:|")
        for layers, label in (("last_linear", '"last_linear" (default)'), ("all", "None (every parameter)")):
            lines.append(
                f"| TracIn self-influence, gradient_layers={label} | "
                + " | ".join(cell([r["subset"][layers]["found"][RANKINGS[0]][i] for r in results]) for i in range(2))
                + f" | {np.mean([r['subset'][layers]['seconds'] for r in results]):.1f} |"
            )
        for name in RANKINGS[1:]:
            lines.append(
                f"| {name} | "
                + " | ".join(cell([r["subset"]["all"]["found"][name][i] for r in results]) for i in range(2))
                + " | |"
            )
        lines.append("")
        lines.append(f"flips memorised on the subset: {cell([r['subset']['memorised'] for r in results])}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["fashion", "digits"], default="fashion")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use the first N training images (default: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--momentum", type=float, default=0.0)
    parser.add_argument("--subset", type=int, default=0, help="also fit the first N images, head vs every layer")
    parser.add_argument("--subset-epochs", type=int, default=60, help="epochs of the subset fits (to memorise)")
    parser.add_argument("--subset-lr", type=float, default=0.2)
    parser.add_argument("--no-baseline", action="store_true", help="skip the fit without the monitor (no overhead)")
    parser.add_argument("--log-every", type=int, default=1, help="the monitor logs its pictures every n epochs")
    parser.add_argument("--top-examples", type=int, default=24, help="images in the picture")
    parser.add_argument("--picture", default=None, help="PNG of the top self-influence examples of the first seed")
    parser.add_argument("--json", default=None, help="write the numbers here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--logdir", default=None, help="TensorBoard logs (the monitor's pictures; default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        args.logdir = args.logdir or tmp
        return _main(args)


def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(log_every_n_steps|num_workers|does not have many workers).*")
    x, y_clean, classes = load_fashion() if args.data == "fashion" else load_digits()
    if args.limit is not None:
        x, y_clean = x[: args.limit], y_clean[: args.limit]
    print(f"{args.data}: {len(x)} training images, 10% labels flipped; SmallCNN, SGD lr={args.lr} "
          f"momentum={args.momentum}, batch {args.batch_size}, {args.epochs} epochs, {args.threads} thread(s)")  # fmt: skip
    start = time.perf_counter()
    results = []
    for seed in args.seeds:
        result = run_seed(x, y_clean, seed, args)
        print(
            f"  seed {seed}: "
            + ", ".join(f"{k} {100 * v[0]:.1f}%/{100 * v[1]:.1f}%" for k, v in result["found"].items())
            + f"; memorised {100 * result['memorised']:.1f}%, fit {result['seconds_with']:.1f} s with, "
            + (f"{result['seconds_without']:.1f} s without" if result["seconds_without"] else "no baseline"),
            flush=True,
        )
        if args.picture and not results:
            picture(x, result, classes, args.top_examples, Path(args.picture))
        results.append(result)
    print("\n" + summarise(results))
    print(f"\n({time.perf_counter() - start:.0f} s in all)")
    for r in results:
        r.pop("_picture")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return results


if __name__ == "__main__":
    main()
