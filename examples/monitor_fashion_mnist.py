"""Watch Grad-CAM, Integrated Gradients and SmoothGrad evolve while a CNN learns real images.

Uses the real Fashion-MNIST when Debian's ``dataset-fashion-mnist`` is installed
(``apt-get install -y dataset-fashion-mnist``: idx files under /usr/share/datasets/fashion-mnist),
otherwise scikit-learn's digits; nothing is downloaded.

    python examples/monitor_fashion_mnist.py [--epochs 3] [--logger tensorboard|wandb] [--log-dir xai_logs]
    tensorboard --logdir xai_logs
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import GradCAM, IntegratedGradients, NoiseTunnel, Saliency
from lightning_xai.callbacks import SaliencyMonitor

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def load_data(limit: int) -> tuple[TensorDataset, TensorDataset, list[str]]:
    """Fashion-MNIST from Debian's package if present, else scikit-learn's digits (both real)."""
    if FASHION_DIR.is_dir():
        from torchvision.datasets import FashionMNIST

        root = Path(tempfile.mkdtemp())
        raw = root / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for gz in FASHION_DIR.glob("*.gz"):
            with gzip.open(gz) as src, open(raw / gz.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
        splits = []
        for train in (True, False):
            ds = FashionMNIST(str(root), train=train, download=False)
            n = limit if train else limit // 4
            splits.append(TensorDataset(ds.data[:n].unsqueeze(1).float() / 255.0, ds.targets[:n]))
        return splits[0], splits[1], FASHION_CLASSES
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = F.interpolate(torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0, size=(28, 28))
    y = torch.tensor(digits.target)
    return TensorDataset(x[:1500], y[:1500]), TensorDataset(x[1500:], y[1500:]), [str(i) for i in range(10)]


class Classifier(pl.LightningModule):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.1),
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
        logits = self(x)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=2e-3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=8000, help="training images (Fashion-MNIST has 60,000)")
    parser.add_argument("--logger", choices=["tensorboard", "wandb"], default="tensorboard")
    parser.add_argument("--log-dir", default="xai_logs")
    args = parser.parse_args(argv)

    pl.seed_everything(0)
    train_set, val_set, classes = load_data(args.limit)
    monitor = SaliencyMonitor(
        [GradCAM(), IntegratedGradients(n_steps=16), NoiseTunnel(Saliency(), n_samples=8)],
        num_samples=10,
        class_names=classes,
    )
    if args.logger == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        logger = WandbLogger(project="lightning-xai-examples", save_dir=args.log_dir, offline=True)
    else:
        from pytorch_lightning.loggers import TensorBoardLogger

        logger = TensorBoardLogger(args.log_dir, name="fashion_mnist")
    trainer = pl.Trainer(max_epochs=args.epochs, logger=logger, callbacks=[monitor], enable_checkpointing=False)
    trainer.fit(
        Classifier(len(classes)),
        DataLoader(train_set, batch_size=128, shuffle=True),
        DataLoader(val_set, batch_size=256),
    )
    print(f"logs in {args.log_dir}: tensorboard --logdir {args.log_dir}")


if __name__ == "__main__":
    main()
