"""A hand-built model whose first layer has one exact concept detector, and its data.

Images are ``[3, 16, 16]`` with every pixel in ``[0, 0.5]`` (the background). A *red patch* is a
square of pure red pixels ``(1, 0, 0)``. Unit 0 of ``features.1`` (after a 1x1 convolution and a
ReLU) is ``2 * relu(r - g - b - 0.5)``: exactly 1 on red-patch pixels and exactly 0 elsewhere,
because the background never has ``r - g - b > 0.5``. Units 1 and 2 are ``relu(g - b)`` and
``relu(b - g)``, unit 3 is dead. A second 1x1 convolution with a ReLU passes unit 0 on and gates
units 1 and 2 by the pixel's colour (so the gradient w.r.t. them changes sign from image to
image), then global average pooling and a linear head: class 0's logit grows with unit 0, class
1's falls with it, class 2 ignores it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DetectorNet", "PooledDetectorNet", "background", "with_patches", "concept_data"]


class DetectorNet(nn.Module):
    """The hand-built model; ``features.1`` is the layer with the exact red-patch detector (unit 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            # unit 0: 2 * relu(r - g - b - 0.5), the red-patch detector; unit 1: relu(g - b), unit 2:
            # relu(b - g) (a red pixel has neither); unit 3 is dead (always 0)
            w1 = torch.tensor([[2.0, -2.0, -2.0], [0.0, 1.0, -1.0], [0.0, -1.0, 1.0], [0.0, 0.0, 0.0]])
            self.features[0].weight.copy_(w1.view(4, 3, 1, 1))
            self.features[0].bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.0]))
            # conv2: unit 0 passes the detector on (always open); units 1 and 2 are complementary
            # gates (exactly one is open where g != b), so the gradient of class 0 w.r.t. units 1 and
            # 2 is +-(1, -1) depending on the pixel's colour: it changes sign from image to image
            w2 = torch.tensor(
                [[3.0, 0.0, 0.0, 0.0], [0.0, 1.0, -1.0, 0.0], [0.0, -1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
            )
            self.features[2].weight.copy_(w2.view(4, 4, 1, 1))
            self.features[2].bias.copy_(torch.tensor([0.01, 0.0, 0.0, 0.0]))
            self.fc.weight.copy_(torch.tensor([[8.0, 1.0, 1.0, 0.0], [-8.0, -1.0, -1.0, 0.0], [0.0, 1.0, 1.0, 1.0]]))
            self.fc.bias.zero_()
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def background(n: int, seed: int, size: int = 16) -> Tensor:
    """``n`` background images: smooth random colour fields plus noise, every pixel in [0, 0.5]."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen)
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.4 * field + 0.1 * torch.rand(n, 3, size, size, generator=gen)).clamp(0.0, 0.5)


def with_patches(images: Tensor, seed: int, side: int = 4) -> tuple[Tensor, Tensor]:
    """Paint one red ``side`` x ``side`` patch at a random place in each image; returns
    ``(images, masks [N, 16, 16] bool)``."""
    gen = torch.Generator().manual_seed(seed)
    n, _, h, w = images.shape
    top = torch.randint(0, h - side + 1, (n,), generator=gen)
    left = torch.randint(0, w - side + 1, (n,), generator=gen)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    masks = (rows >= top.view(n, 1, 1)) & (rows < (top + side).view(n, 1, 1))
    masks = masks & (cols >= left.view(n, 1, 1)) & (cols < (left + side).view(n, 1, 1))
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    return torch.where(masks.unsqueeze(1), red, images), masks


def concept_data(n_concept: int = 30, n_pool: int = 400, n_inputs: int = 24, seed: int = 0) -> dict[str, Tensor]:
    """Concept examples (red patches), a random pool and class inputs (half with patches)."""
    concept, _ = with_patches(background(n_concept, seed), seed + 1)
    pool = background(n_pool, seed + 2)
    inputs = background(n_inputs, seed + 3)
    inputs[: n_inputs // 2], _ = with_patches(inputs[: n_inputs // 2], seed + 4)
    return {"concept": concept, "pool": pool, "inputs": inputs}


class PooledDetectorNet(nn.Module):
    """The red-patch detector of :class:`DetectorNet` followed directly by global average pooling
    and a linear head (``features.1`` is the detector layer).

    The gradient of any class score w.r.t. ``features.1`` is then the same for every input, so
    each CAV's sign-count TCAV score is exactly 0 or 1: the random-vs-random null is bimodal. Units
    1 and 2 are ``relu(g - b)`` and ``relu(b - g)``, unit 3 the brightness ``relu(r + g + b) / 3``;
    class 0 grows with the detector (weight 8) and class 2 ignores it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            w1 = torch.tensor([[2.0, -2.0, -2.0], [0.0, 1.0, -1.0], [0.0, -1.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
            self.features[0].weight.copy_(w1.view(4, 3, 1, 1))
            self.features[0].bias.copy_(torch.tensor([-1.0, 0.0, 0.0, 0.0]))
            self.fc.weight.copy_(torch.tensor([[8.0, 1.0, -1.0, 2.0], [-8.0, -1.0, 1.0, -2.0], [0.0, 1.0, 1.0, 1.0]]))
            self.fc.bias.zero_()
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))
