"""Map quality of the CAM family's old default layer (the last ``nn.Conv2d``) vs the new one (the
feature map the global pool consumes) on the demo model, trained here for a few epochs.

A :class:`~lightning_xai.demo.ShapesClassifier` (as a plain ``nn.Module``) is trained with Adam on
the demo's data (``ShapesDataset`` 48 x 48 with the shortcut marker, ``--num-train`` images, by
default the demo's 12,288, batch 64) for ``--epochs`` epochs on one CPU thread, then every CAM method explains the 256 validation images
(no marker) for their label at both layers. Reported per method and layer: the share of images
whose map is all zero, and the mean share of attribution inside the shape's mask
(:func:`~lightning_xai.metrics.functional.mask_share`; the shape's area fraction is what a
uniform map scores).

Usage (from the repository root)::

    .venv/bin/python benchmarks/cam_default_quality.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lightning_xai.attribution import CAM, GradCAM, GradCAMPlusPlus, ScoreCAM, default_cam_layer  # noqa: E402
from lightning_xai.data import ShapesDataset  # noqa: E402
from lightning_xai.demo import ShapesClassifier  # noqa: E402
from lightning_xai.metrics.functional import mask_share  # noqa: E402


def train(epochs: int, num_train: int, seed: int = 0) -> tuple[torch.nn.Module, ShapesDataset, float]:
    torch.manual_seed(seed)
    train_set = ShapesDataset(num_samples=num_train, image_size=48, shortcut=True, seed=seed)
    val_set = ShapesDataset(num_samples=256, image_size=48, shortcut=False, seed=seed + 1)
    model = ShapesClassifier(num_classes=train_set.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        print(f"epoch {epoch + 1}/{epochs}", file=sys.stderr, flush=True)
        order = torch.randperm(len(train_set), generator=gen)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(model(train_set.images[idx]), train_set.labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(val_set.images).argmax(1) == val_set.labels).float().mean())
    return model, val_set, acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--num-train", type=int, default=12288, help="training images (the demo's 12,288)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    model, val, acc = train(args.epochs, args.num_train)
    x, y, masks = val.images, val.labels, val.masks
    print(
        f"ShapesClassifier trained {args.epochs} epochs on {args.num_train} images in {time.perf_counter() - start:.0f} s; val acc {acc:.3f}"
    )
    print(
        f"default layer: {default_cam_layer(model, x[:2])!r}; old default: {GradCAM('last_conv').layer_name(model)!r}"
    )
    print(f"uniform-map mask share (shape area): {float(masks.flatten(1).mean(1).mean()):.3f}\n")
    print("| method | layer | all-zero maps | mask share |")
    print("|---|---|---|---|")
    for cls in (GradCAM, GradCAMPlusPlus, ScoreCAM, CAM):
        for layer in ("last_conv", None):
            if cls is CAM and layer == "last_conv":
                continue  # CAM is defined at the pooled features only
            maps = cls(layer)(model, x, y)
            zero = float((maps.flatten(1).amax(1) <= 0).float().mean())
            share = float(mask_share(maps, masks))
            name = "last conv (old default)" if layer else "global pool input (new default)"
            print(f"| {cls.__name__} | {name} | {zero:.1%} | {share:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
