"""Explain a small CNN trained on real handwritten digits, without a Trainer.

Trains a tiny CNN on scikit-learn's digits (1,797 real 8x8 images, shipped with scikit-learn, no
download) for a few seconds, then runs every explainer in ``lightning_xai.attribution`` on a few
test digits and writes one PNG: a row per digit, a column per method.

    python examples/explain_digits.py [--out digits_explained.png] [--epochs 30]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import (
    CAM,
    Deconvnet,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Saliency,
    ScoreCAM,
)
from lightning_xai.render import annotated_grid, normalize_maps, overlay, reduce_channels, save_png, to_display


def load_digits_tensors(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Real digits as ``[N, 1, size, size]`` floats in [0, 1] and ``[N]`` labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return images, torch.tensor(digits.target, dtype=torch.long)


def make_model() -> nn.Module:
    """Conv/BN/ReLU blocks, a global average pool and a linear head (so CAM applies)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="digits_explained.png")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-images", type=int, default=6)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    images, labels = load_digits_tensors()
    train_x, train_y, test_x, test_y = images[:1500], labels[:1500], images[1500:], labels[1500:]
    model = make_model()
    start = time.perf_counter()
    train(model, train_x, train_y, args.epochs)
    with torch.no_grad():
        accuracy = (model(test_x).argmax(1) == test_y).float().mean().item()
    print(f"trained in {time.perf_counter() - start:.1f} s, test accuracy {accuracy:.3f}")

    explainers = {
        "Saliency": Saliency(),
        "InputXGradient": InputXGradient(),
        "GuidedBackprop": GuidedBackprop(),
        "Deconvnet": Deconvnet(),
        "SmoothGrad": NoiseTunnel(Saliency(), n_samples=16),
        "IntegratedGradients": IntegratedGradients(n_steps=32),
        "CAM": CAM(),
        "GradCAM": GradCAM(),
        "GuidedGradCAM": GuidedGradCAM(),
        "GradCAM++": GradCAMPlusPlus(),
        "ScoreCAM": ScoreCAM(),
        "FullGrad": FullGrad(),
    }
    x = test_x[: args.num_images]
    display = to_display(x)
    tiles, captions = [], []
    for i in range(x.shape[0]):
        tiles.append(display[i])
        captions.append(f"digit {int(test_y[i])}")
    per_method = {}
    for name, explainer in explainers.items():
        start = time.perf_counter()
        maps = explainer(model, x, test_y[: x.shape[0]])
        signed = bool(explainer.signed)
        maps = reduce_channels(maps, signed=signed) if maps.shape[1] != 1 else maps
        per_method[name] = overlay(display, normalize_maps(maps, signed=signed, clip_percentile=99.0), signed=signed)
        print(f"{name:>20}: {1000 * (time.perf_counter() - start):7.1f} ms")
    rows = []
    for i in range(x.shape[0]):
        rows.append(display[i])
        rows.extend(per_method[name][i] for name in explainers)
    captions = [c for i in range(x.shape[0]) for c in [f"digit {int(test_y[i])}", *explainers]]
    grid = annotated_grid(torch.stack(rows), captions, ncols=len(explainers) + 1, title="lightning_xai on real digits")
    out = save_png(grid, args.out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
