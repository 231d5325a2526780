"""Small models the test-suite shares. Importable (not defined inside tests) so ddp_spawn can pickle them."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
