"""Importable helpers for the module tests (ddp_spawn pickles what it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


class TinyTeacher(nn.Module):
    """A fixed linear classifier on 1x4x4 images (16 features, 3 classes)."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.flatten(1))


class SoftmaxTeacher(TinyTeacher):
    """Returns probabilities instead of logits (a bad teacher)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).softmax(dim=1)


class TupleTeacher(TinyTeacher):
    """Returns a tuple (a bad teacher)."""

    def forward(self, x: Tensor) -> Any:
        return super().forward(x), x


def tiny_image_loader(n: int = 32, batch_size: int = 8, seed: int = 0, num_classes: int = 3) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    y = torch.arange(n) % num_classes
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def trainer(tmp_path: Path, **overrides: Any) -> pl.Trainer:
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(tmp_path),
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        logger=False,
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


def read_tensorboard(log_dir: str | Path) -> list[Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accs = []
    for f in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        accs.append(acc)
    return accs


def tiny_cnn(num_classes: int = 3, width: int = 4) -> nn.Module:
    from tests.helpers.models import SmallCNN

    torch.manual_seed(0)
    return SmallCNN(in_channels=3, num_classes=num_classes, width=width)


def tiny_rgb_loader(n: int = 32, batch_size: int = 8, seed: int = 0, num_classes: int = 3, size: int = 8) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = torch.rand(n, 3, size, size, generator=gen) * 0.2
    x[:, 0] += (y == 0).float()[:, None, None] * 0.5  # a learnable signal per class
    x[:, 1] += (y == 1).float()[:, None, None] * 0.5
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


class QuadrantClassifier(nn.Module):
    """Hand-built: class 1's logit is 10 * the mean over the top-left 4x4 quadrant of an 8x8 image of
    ``x * checkerboard`` (a +-1 pattern), class 0's its negative. Nothing else of the image matters, and a
    blur (the masking model's "removed" pixels) erases the evidence. The conv is the identity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
        self.register_buffer("board", checkerboard())

    def forward(self, x: Tensor) -> Tensor:
        score = 10.0 * (self.conv(x)[:, 0, :4, :4] * self.board).mean(dim=(1, 2))
        return torch.stack([-score, score], dim=1)


def checkerboard() -> Tensor:
    """A 4x4 +-1 checkerboard."""
    i = torch.arange(4)
    return ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()


def contract_masker(in_channels: int = 1, feature_channels: int = 16, num_classes: int = 10) -> Any:
    """A seeded, untrained masking model for the contract suite (without touching the global RNG)."""
    from lightning_xai.modules import MaskingModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return MaskingModel(feature_channels, num_classes, in_channels=in_channels, hidden=4)
