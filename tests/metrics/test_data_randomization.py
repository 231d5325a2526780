"""Data randomisation test (Adebayo et al. 2018) end to end: copies trained through a Lightning
Trainer on scikit-learn's digits, one on the real labels with another seed (the control) and one
on permuted labels. The gradient's maps must lose their similarity to the real model's when the
labels are permuted, far more than between two real-label models; guided backprop's stay more
similar (the paper's finding)."""

from __future__ import annotations

import functools
import logging

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import GuidedBackprop, Saliency
from lightning_xai.metrics import DataRandomization
from lightning_xai.metrics.functional import data_randomization

pytest.importorskip("sklearn")


class DigitsNet(pl.LightningModule):
    """conv-relu x2 and a linear layer on 1x8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(32 * 64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@functools.lru_cache(maxsize=1)
def _models() -> tuple[nn.Module, nn.Module, nn.Module, torch.Tensor, torch.Tensor, float]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16
    labels = torch.tensor(digits.target)
    train_x, train_y = images[:1500], labels[:1500]
    test_x, test_y = images[1500:1564], labels[1500:1564]
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)

    def fit(targets: torch.Tensor, seed: int) -> nn.Module:
        pl.seed_everything(seed, verbose=False)
        model = DigitsNet()
        loader = DataLoader(TensorDataset(train_x, targets), batch_size=64, shuffle=True)
        trainer = pl.Trainer(
            max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, accelerator="cpu", devices=1,
        )  # fmt: skip
        trainer.fit(model, loader)
        return model.eval()

    real, control = fit(train_y, 0), fit(train_y, 1)
    permuted = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(0))]
    shuffled = fit(permuted, 0)
    accuracy = float((real(test_x).argmax(dim=1) == test_y).float().mean())
    return real, control, shuffled, test_x, test_y, accuracy


def test_gradient_maps_decorrelate_when_labels_are_permuted() -> None:
    real, control, shuffled, x, y, accuracy = _models()
    assert accuracy > 0.85  # the real model learnt the task
    gradient = Saliency()
    same = data_randomization(real, control, x, gradient, y).mean()
    permuted = data_randomization(real, shuffled, x, gradient, y).mean()
    # measured: 0.68 between two real-label models, 0.26 against the permuted-label model
    assert same > 0.5
    assert permuted < same - 0.25


def test_guided_backprop_stays_more_similar_than_the_gradient() -> None:
    real, _, shuffled, x, y, _ = _models()
    gradient = data_randomization(real, shuffled, x, Saliency(), y).mean()
    guided = data_randomization(real, shuffled, x, GuidedBackprop(), y).mean()
    # Adebayo et al.: guided backprop is largely insensitive to the labels (measured 0.59 vs 0.26)
    assert guided > gradient + 0.15


def test_metric_class_accumulates_the_functional_values_over_updates() -> None:
    real, _, shuffled, x, y, _ = _models()
    metric = DataRandomization(Saliency())
    for rows in (slice(0, 24), slice(24, 40), slice(40, 64)):
        metric.update(real, shuffled, x[rows], y[rows])
    expected = data_randomization(real, shuffled, x, Saliency(), y).mean()
    torch.testing.assert_close(metric.compute(), expected.to(metric.compute().dtype), rtol=1e-5, atol=1e-6)
