"""Real-time saliency (Dabkowski & Gal 2017): a masking model against Grad-CAM on shapes with masks.

Trains the demo's ShapesClassifier on the generated shapes data (exact pixel masks), freezes it,
and trains a ``MaskingModel`` beside it with ``MaskingModelTraining`` (the paper's preserve /
destroy / area / smoothness objective). On held-out images it compares the masking model's maps
(one classifier forward + one masker forward, no backward) with Grad-CAM's (one forward + one
backward) on the true class: mask share, pointing game and wall time per image. Saves the
masking model (``MaskingModel.save``) and uses it through the registered ``"masking_model"``
explainer, as a monitor would; writes a picture of both methods' maps.

    python examples/masking_shapes.py [--epochs 6] [--mask-epochs 6] [--out docs/masking_shapes.png]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import GradCAM, get_explainer
from lightning_xai.data import ShapesDataset
from lightning_xai.demo import ShapesClassifier
from lightning_xai.metrics.functional import mask_share
from lightning_xai.modules import MaskingModel, MaskingModelTraining
from lightning_xai.render import annotated_grid, overlay, save_png, to_display


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of maps whose maximum pixel lies inside the mask (no tolerance)."""
    flat = maps.flatten(1).argmax(dim=1)
    return (masks.flatten(1).gather(1, flat[:, None]).squeeze(1) > 0.5).float().mean()


def _trainer(epochs: int) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="classifier epochs")
    parser.add_argument("--mask-epochs", type=int, default=6, help="masking-model epochs")
    parser.add_argument("--num-train", type=int, default=1536)
    parser.add_argument("--num-val", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=24)
    parser.add_argument("--area", type=float, default=3.0)
    parser.add_argument("--smooth", type=float, default=1.0)
    parser.add_argument("--fill", default="mean", choices=["blur", "mean"])
    parser.add_argument("--lr", type=float, default=1e-2, help="masking-model learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="masking_shapes.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()

    train_set = ShapesDataset(args.num_train, args.image_size, num_classes=4, seed=100 + args.seed)
    val = ShapesDataset(args.num_val, args.image_size, num_classes=4, seed=200 + args.seed)
    loader = DataLoader(TensorDataset(train_set.images, train_set.labels), batch_size=64, shuffle=True)
    pl.seed_everything(args.seed, verbose=False)
    classifier = ShapesClassifier(num_classes=4, width=16, dropout=0.0)
    _trainer(args.epochs).fit(classifier, loader)
    classifier.eval()
    with torch.no_grad():
        acc = (classifier(val.images).argmax(dim=1) == val.labels).float().mean().item()
    print(f"classifier: val acc {acc:.3f} ({time.perf_counter() - start:.0f} s)")

    masker = MaskingModel(
        32,
        4,
        in_channels=3,
        layer="features.7",
        area_weight=args.area,
        smooth_weight=args.smooth,
        blur_sigma=args.image_size / 6,
        fill=args.fill,
    )
    _trainer(args.mask_epochs).fit(
        MaskingModelTraining(classifier, masker, lr=args.lr, render_every_n_epochs=0), loader
    )
    print(f"masking model trained ({time.perf_counter() - start:.0f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        explainers = {
            "masking_model": get_explainer("masking_model", weights=str(masker.save(Path(tmp) / "masker.pt"))),
            "grad_cam": GradCAM(),
        }
        x, y, masks = val.images, val.labels, val.masks
        summary: dict[str, dict[str, float]] = {}
        maps: dict[str, Tensor] = {}
        for name, explainer in explainers.items():
            explainer(classifier, x[:8], y[:8])  # warm-up (and the weights file is loaded once)
            t0 = time.perf_counter()
            maps[name] = torch.cat(
                [explainer(classifier, x[i : i + 128], y[i : i + 128]) for i in range(0, len(x), 128)]
            )
            per_image = (time.perf_counter() - t0) / len(x)
            summary[name] = {
                "mask_share": mask_share(maps[name], masks).item(),
                "pointing": pointing_game(maps[name], masks).item(),
                "ms_per_image": 1000 * per_image,
                "mean_map": maps[name].mean().item(),
            }
    cost = {"masking_model": "1 fwd + masker fwd", "grad_cam": "1 fwd + 1 bwd"}
    print(f"\nshapes {args.image_size}px, classifier acc {acc:.3f}, {time.perf_counter() - start:.0f} s")
    print(f"{'method':<15}{'mask share':>12}{'pointing':>10}{'ms/image':>10}  passes")
    for name, s in summary.items():
        print(f"{name:<15}{s['mask_share']:>12.3f}{s['pointing']:>10.3f}{s['ms_per_image']:>10.3f}  {cost[name]}")
    area = masks.flatten(1).mean(dim=1).mean().item()
    print(f"(a uniform map's mask share is the shapes' mean area: {area:.3f})")

    display = to_display(x[:8])
    tiles = [
        display,
        overlay(display, maps["masking_model"][:8], signed=False),
        overlay(display, maps["grad_cam"][:8], signed=False),
    ]
    rows = torch.stack([t[i] for i in range(8) for t in tiles])
    captions = [c for i in range(8) for c in (val.classes[int(y[i])], "masking model", "Grad-CAM")]
    out = save_png(annotated_grid(rows, captions, ncols=6, title="real-time masks vs Grad-CAM"), args.out)
    print(f"wrote {out}")
    summary["classifier"] = {"acc": acc}
    return summary


if __name__ == "__main__":
    main()
