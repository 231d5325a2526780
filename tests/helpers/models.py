"""Plain ``nn.Module`` models the test-suite shares: CNNs for the explainers (``make``), a trained
shapes model for the metrics, teachers for tree distillation, hand-built models for the masking
model. Importable (not defined inside tests) so ddp_spawn can pickle them."""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SmallCNN(nn.Module):
    """Conv/ReLU/BatchNorm/inplace ReLU/MaxPool/Dropout with a global-average-pool + linear head (CAM-able)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(0.25)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(self.features(x)))))


class VGGish(nn.Module):
    """VGG-style: inplace ReLUs, MaxPool, a flatten + MLP head (no GAP: CAM does not apply)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * width * 4, 32),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


class SharedReluCNN(nn.Module):
    """One nn.ReLU module reused after every layer."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class FunctionalReluCNN(SharedReluCNN):
    """Same weights layout as SharedReluCNN but uses F.relu, which no module hook sees."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18(num_classes: int = 10) -> nn.Module:
    """torchvision resnet18 with random weights (no download)."""
    from torchvision.models import resnet18 as tv_resnet18

    return tv_resnet18(weights=None, num_classes=num_classes)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so eval-mode
    BatchNorm is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model


def make(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A seeded eval-mode model and a matching input batch, by name:
    ``small`` (1x28x28, batch 4), ``resnet18`` (3x64x64, batch 2), ``vgg`` (3x32x40: not square,
    batch 3), ``shared_relu`` and ``functional_relu`` (3x16x16, batch 3)."""
    torch.manual_seed(seed)
    if name == "small":
        model, shape = SmallCNN(1, 10), (4, 1, 28, 28)
    elif name == "resnet18":
        model, shape = resnet18(10), (2, 3, 64, 64)
    elif name == "vgg":
        model, shape = VGGish(3, 10), (3, 3, 32, 40)
    elif name == "shared_relu":
        model, shape = SharedReluCNN(3, 5), (3, 3, 16, 16)
    elif name == "functional_relu":
        model, shape = FunctionalReluCNN(3, 5), (3, 3, 16, 16)
    else:
        raise ValueError(name)
    randomize_batchnorm(model, seed)
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    return model, torch.rand(shape, generator=gen)


MODEL_NAMES = ["small", "resnet18", "vgg"]


class ShapesNet(nn.Module):
    """A small CNN for 3x16x16 shapes: conv-relu x3, max-pool, linear on the flattened features."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16 * 8 * 8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@functools.lru_cache(maxsize=1)
def trained_shapes_model() -> tuple[nn.Module, Any]:
    """ShapesNet trained (seeded, a few seconds on one core) on 384 two-class shapes of 16 px; with a
    test set. Cached: one training per process."""
    from lightning_xai.data.shapes import ShapesDataset

    torch.manual_seed(0)
    train = ShapesDataset(num_samples=384, image_size=16, num_classes=2, noise=0.02, seed=1)
    test = ShapesDataset(num_samples=64, image_size=16, num_classes=2, noise=0.02, seed=2)
    model = ShapesNet(train.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        perm = torch.randperm(len(train), generator=gen)
        for i in range(0, len(train), 64):
            idx = perm[i : i + 64]
            loss = nn.functional.cross_entropy(model(train.images[idx]), train.labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), test


def tiny_cnn(num_classes: int = 3, width: int = 4) -> nn.Module:
    """A seeded SmallCNN on 3-channel images (seeds the global RNG with 0)."""
    torch.manual_seed(0)
    return SmallCNN(in_channels=3, num_classes=num_classes, width=width)


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


def checkerboard() -> Tensor:
    """A 4x4 +-1 checkerboard."""
    i = torch.arange(4)
    return ((i[:, None] + i[None, :]) % 2 * 2 - 1).float()


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


def contract_masker(in_channels: int = 1, feature_channels: int = 16, num_classes: int = 10) -> Any:
    """A seeded, untrained masking model for the contract suite (without touching the global RNG)."""
    from lightning_xai.modules import MaskingModel

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return MaskingModel(feature_channels, num_classes, in_channels=in_channels, hidden=4)
