"""TCAV on real data: Fashion-MNIST concepts named by held-out real images, watched during training.

Reads the real Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (idx ``.gz`` files in
``/usr/share/datasets/fashion-mnist``, read with numpy and gzip; nothing is downloaded). The
concepts are real images from the *test* split, never trained on:

* ``"sneaker"``: images of the class Sneaker, scored for the class Ankle boot;
* ``"textured"`` and ``"plain"``: tops (T-shirt, Pullover, Coat, Shirt) with the most and the least
  high-frequency texture inside the garment (:func:`texture_score`: mean absolute Laplacian over the
  garment's pixels), scored for the class Shirt, alone and as the relative CAV
  ``"textured-vs-plain"``;

against random test images. A small CNN trains a few epochs with :class:`TCAVMonitor` attached
(every epoch, ``n_random`` random sets, the default ``"effect"`` statistic and ``"prediction"``
test), and the script writes ``docs/tcav_fashion_mnist.png``: each concept's score for its class
over the epochs, hollow where not significant, and the validation accuracy.

Usage (from the repository root; a few minutes on 2 CPU cores)::

    .venv/bin/python examples/tcav_fashion_mnist.py [--epochs 4] [--num-train 12000] [--out docs/tcav_fashion_mnist.png]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PL_DISABLE_FORK", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
TOPS = (0, 2, 4, 6)  # T-shirt, Pullover, Coat, Shirt
SHIRT, SNEAKER, BOOT = 6, 7, 9
LAYER = "net.5"  # the second convolution's ReLU (14 x 14 maps)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped or not) as a numpy array: the magic number gives the rank, then the
    big-endian dimensions, then unsigned bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    rank = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank).reshape(dims)


def load_fashion_mnist(folder: Path = FASHION_DIR) -> dict[str, torch.Tensor]:
    """``{"train_x", "train_y", "test_x", "test_y"}``: ``[N, 1, 28, 28]`` floats in ``[0, 1]`` and labels."""
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")
        out[f"{split}_x"] = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
        out[f"{split}_y"] = torch.from_numpy(labels.astype(np.int64))
    return out


def texture_score(images: torch.Tensor, foreground: float = 0.1) -> torch.Tensor:
    """``[N]`` high-frequency texture of each ``[N, 1, H, W]`` image: the mean absolute 3 x 3
    Laplacian over the pixels of the object (brighter than ``foreground``), its outline excluded
    (pixels whose 3 x 3 neighbourhood leaves the object): stripes, prints and knit score high,
    a plain fabric near 0."""
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    lap = F.conv2d(images, kernel, padding=1).abs()
    inside = (images > foreground).float()
    interior = -F.max_pool2d(-inside, 3, stride=1, padding=1)  # eroded: every neighbour inside
    return (lap * interior).sum((1, 2, 3)) / interior.sum((1, 2, 3)).clamp(min=1.0)


def concept_sets(
    images: torch.Tensor, labels: torch.Tensor, size: int, *, seed: int = 0
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The concepts from held-out images, and a pool of random images (disjoint from them).

    ``"sneaker"``: ``size`` images of class Sneaker; ``"textured"`` / ``"plain"``: the ``size``
    tops (:data:`TOPS`) with the highest / lowest :func:`texture_score`; the random pool: every
    image used by no concept, shuffled with ``seed``.
    """
    gen = torch.Generator().manual_seed(seed)
    sneakers = (labels == SNEAKER).nonzero().flatten()
    sneakers = sneakers[torch.randperm(sneakers.numel(), generator=gen)[:size]]
    tops = torch.isin(labels, torch.tensor(TOPS)).nonzero().flatten()
    order = tops[texture_score(images[tops]).argsort(descending=True)]
    textured, plain = order[:size], order[-size:]
    used = torch.zeros(labels.numel(), dtype=torch.bool)
    used[torch.cat([sneakers, textured, plain])] = True
    rest = (~used).nonzero().flatten()
    pool = rest[torch.randperm(rest.numel(), generator=gen)]
    concepts = {"sneaker": images[sneakers], "textured": images[textured], "plain": images[plain]}
    return concepts, images[pool]


def synthetic(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fashion-MNIST-shaped stand-in data (for the tests): ``n`` training and ``n`` test images of
    blobs whose brightness and stripes depend on the label."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for split in ("train", "test"):
        y = torch.randint(0, 10, (n,), generator=gen)
        yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        blob = (((yy - 14) ** 2 + (xx - 14) ** 2) < (6 + y.view(-1, 1, 1)) ** 2).float()
        stripes = 0.5 + 0.5 * torch.sin(xx * (0.3 + 0.2 * torch.rand(n, 1, 1, generator=gen)))
        x = blob * (0.3 + 0.05 * y.view(-1, 1, 1)) * torch.where(torch.rand(n, 1, 1, generator=gen) > 0.5, stripes, 1.0)
        out[f"{split}_x"] = (x + 0.05 * torch.rand(n, 28, 28, generator=gen)).clamp(0, 1).unsqueeze(1)
        out[f"{split}_y"] = y
    return out


def make_classifier(num_classes: int = 10, lr: float = 2e-3):
    """A small CNN LightningModule for 28 x 28 grayscale images."""
    import pytorch_lightning as pl

    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lr = lr
            self.net = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(32, num_classes),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.cross_entropy(self(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val/acc", (self(x).argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.lr)

    return Classifier()


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=12000)
    parser.add_argument("--concept-size", type=int, default=100)
    parser.add_argument("--n-random", type=int, default=10)
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--synthetic", type=int, default=0, help="use N synthetic images instead (tests)")
    parser.add_argument("--log-dir", default="tcav_fashion_logs")
    parser.add_argument("--out", default=str(ROOT / "docs" / "tcav_fashion_mnist.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_xai.callbacks import TCAVMonitor
    from lightning_xai.render import save_png
    from lightning_xai.render.plots import tcav_history_plot

    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    data = synthetic(args.synthetic, args.seed) if args.synthetic else load_fashion_mnist()
    half = data["test_x"].shape[0] // 2  # test images: first half for concepts and random sets, second for validation
    concepts, pool = concept_sets(data["test_x"][:half], data["test_y"][:half], args.concept_size, seed=args.seed)
    train = TensorDataset(data["train_x"][: args.num_train], data["train_y"][: args.num_train])
    val = TensorDataset(data["test_x"][half:], data["test_y"][half:])
    relative = [("textured", "plain")]
    monitor = TCAVMonitor(
        concepts=concepts,
        layers=LAYER,
        target_classes=[SHIRT, BOOT],
        n_random=args.n_random,
        random_examples=pool,
        random_size=args.concept_size,
        num_samples=args.num_samples,
        class_names=CLASSES,
        relative=relative,
        seed=args.seed,
        log_embeddings=False,
    )

    class Accuracy(pl.Callback):
        def __init__(self) -> None:
            self.val: list[float] = []

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if not trainer.sanity_checking:
                self.val.append(float(trainer.callback_metrics["val/acc"]))

    accuracy = Accuracy()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(args.log_dir, name="tcav_fashion"),
        callbacks=[monitor, accuracy],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        deterministic=True,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(
            make_classifier(),
            DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(args.seed)),
            DataLoader(val, batch_size=256),
        )
    seconds = time.perf_counter() - start

    epochs = [int(h["epoch"]) for h in monitor.history]
    shown = [("sneaker", BOOT), ("textured", SHIRT), ("plain", SHIRT), ("textured-vs-plain", SHIRT)]
    curves, significant, table = {}, {}, {}
    for concept, cls in shown:
        c, t = monitor.concept_names.index(concept), monitor.target_classes.index(cls)
        label = f"{concept} -> {CLASSES[cls]}"
        curves[label] = torch.stack([h["results"][t, c, 0, 0] for h in monitor.history]).float()
        significant[label] = torch.stack([h["results"][t, c, 0, 3] > 0 for h in monitor.history])
        table[label] = {
            "score": [round(float(h["results"][t, c, 0, 0]), 4) for h in monitor.history],
            "p_value": [float(f"{float(h['results'][t, c, 0, 2]):.2g}") for h in monitor.history],
            "sign_count": [round(float(h["results"][t, c, 0, 8]), 2) for h in monitor.history],
            "cav_accuracy": [round(float(h["results"][t, c, 0, 4]), 2) for h in monitor.history],
            "random_mean_sd": [
                (round(float(h["results"][t, c, 0, 6]), 4), round(float(h["results"][t, c, 0, 7]), 4))
                for h in monitor.history
            ],
        }
    image = tcav_history_plot(
        epochs,
        curves,
        significant,
        title=f"Fashion-MNIST, CNN at {LAYER}, TCAV effect",
        ylabel="score change along CAV",
    )
    out = save_png(image, args.out)
    result = {
        "seconds": round(seconds, 1),
        "out": str(out),
        "val_acc": [round(a, 3) for a in accuracy.val],
        "tcav": table,
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
