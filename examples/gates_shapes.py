"""Do class-specific gates (Liang et al. 2020) sharpen CAM localisation? Measured on shapes with masks.

Trains the demo's ShapesClassifier twice on the generated shapes data (the class is the shape;
exact pixel masks): once plainly, once with ``ClassSpecificGates`` after the last convolution and
the authors' per-epoch alternation (``ClassSpecificGateTraining``: ``--warmup-epochs`` standard
epochs, then cycles of one standard and ``period - gated_from`` gated epochs), same seed, same
number of epochs. On held-out images it reports accuracy (standard path), the localisation of
Grad-CAM and CAM on the true class: mask share (share of the map's mass inside the shape's mask,
``lightning_xai.metrics.functional.mask_share``) and the pointing game (the map's maximum lies in
the mask), and the filters' class-specificity on the standard path (for each filter of the gated
layer, the largest share of its mean activation, summed over classes, that one class gets; 1/C:
shared by all, 1: one class), averaged over seeds. Writes the learnt filter-class matrix as PNG.

    python examples/gates_shapes.py [--epochs 13] [--seeds 0 1] [--out docs/gates_shapes.png]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import CAM, GradCAM
from lightning_xai.data import ShapesDataset
from lightning_xai.demo import ShapesClassifier
from lightning_xai.metrics.functional import mask_share
from lightning_xai.modules import ClassSpecificGates, ClassSpecificGateTraining
from lightning_xai.render import save_png
from lightning_xai.render.gates import render_gate_matrix


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of maps whose maximum pixel lies inside the mask (Zhang et al. 2016, no tolerance)."""
    flat = maps.flatten(1).argmax(dim=1)
    return (masks.flatten(1).gather(1, flat[:, None]).squeeze(1) > 0.5).float().mean()


def class_specificity(model: nn.Module, x: Tensor, y: Tensor, layer: str = "features.8") -> float:
    """Mean over filters of ``max_c a[k, c] / sum_c a[k, c]``, ``a[k, c]`` the mean activation of filter
    ``k`` (after the ReLU) over the images of class ``c``, on the standard path."""
    acts: list[Tensor] = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.append(o.mean(dim=(2, 3))))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    per_class = torch.stack([acts[0][y == c].mean(dim=0) for c in range(int(y.max()) + 1)], dim=1)  # [K, C]
    share = per_class / per_class.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return share.max(dim=1).values.mean().item()


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


def train(gated: bool, data: tuple[ShapesDataset, ShapesDataset], args: argparse.Namespace, seed: int) -> nn.Module:
    train_set, _ = data
    pl.seed_everything(seed, verbose=False)
    model = ShapesClassifier(num_classes=train_set.num_classes, width=args.width, lr=args.lr, dropout=0.0)
    loader = DataLoader(TensorDataset(train_set.images, train_set.labels), batch_size=64, shuffle=True)
    if gated:
        gates = ClassSpecificGates(2 * args.width, train_set.num_classes, sparsity=args.sparsity, budget=args.budget)
        module: pl.LightningModule = ClassSpecificGateTraining(
            model,
            gates,
            layer="features.7",
            lr=args.lr,
            gated_lr=args.gated_lr,
            gate_lr=args.gate_lr,
            warmup_epochs=args.warmup_epochs,
            period=args.period,
            gated_from=args.gated_from,
            class_names=train_set.classes,
            render_every_n_epochs=0,
        )
    else:
        module = model
    _trainer(args.epochs).fit(module, loader)
    model.eval()
    model.gates = gates if gated else None  # type: ignore[assignment]
    return model


def evaluate(model: nn.Module, val: ShapesDataset) -> dict[str, float]:
    x, y, masks = val.images, val.labels, val.masks
    with torch.no_grad():
        acc = (model(x).argmax(dim=1) == y).float().mean().item()
    out = {"acc": acc, "specificity": class_specificity(model, x, y)}
    for name, explainer in (("grad_cam", GradCAM()), ("cam", CAM())):
        maps = torch.cat([explainer(model, x[i : i + 256], y[i : i + 256]) for i in range(0, len(x), 256)])
        out[f"{name}_mask_share"] = mask_share(maps, masks).item()
        out[f"{name}_pointing"] = pointing_game(maps, masks).item()
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=13)
    parser.add_argument("--num-train", type=int, default=1536)
    parser.add_argument("--num-val", type=int, default=512)
    parser.add_argument("--image-size", type=int, default=24)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sparsity", type=float, default=1e-3)
    parser.add_argument("--gated-lr", type=float, default=None, help="network lr on the gated path (default: --lr)")
    parser.add_argument("--budget", type=float, default=0.2)
    parser.add_argument("--gate-lr", type=float, default=0.01)
    parser.add_argument("--warmup-epochs", type=int, default=4)
    parser.add_argument("--period", type=int, default=3)
    parser.add_argument("--gated-from", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", default="gates_shapes.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    start = time.perf_counter()
    rows: dict[str, list[dict[str, float]]] = {"plain": [], "gated": []}
    gates = None
    for seed in args.seeds:
        data = (
            ShapesDataset(args.num_train, args.image_size, num_classes=4, seed=100 + seed),
            ShapesDataset(args.num_val, args.image_size, num_classes=4, seed=200 + seed),
        )
        for kind in rows:
            model = train(kind == "gated", data, args, seed)
            rows[kind].append(evaluate(model, data[1]))
            if kind == "gated":
                gates = model.gates
            print(f"seed {seed} {kind}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[kind][-1].items()))
    summary = {k: {m: sum(r[m] for r in v) / len(v) for m in v[0]} for k, v in rows.items()}
    print(
        f"\nshapes {args.image_size}px, {args.epochs} epochs (warm-up {args.warmup_epochs}, period {args.period}, "
        f"gated from {args.gated_from}), sparsity {args.sparsity}, {len(args.seeds)} seed(s), "
        f"{time.perf_counter() - start:.0f} s"
    )
    cols = list(summary["plain"])
    print(f"{'model':<10}" + "".join(f"{c:>20}" for c in cols))
    for kind, s in summary.items():
        print(f"{kind:<10}" + "".join(f"{s[c]:>20.3f}" for c in cols))
    assert gates is not None
    print(f"gate density (share > 0.1): {float(gates.density()):.3f}, mean gate {gates.gate.mean().item():.3f}")
    picture = render_gate_matrix(gates.gate, data[0].classes, title="class-specific gates (shapes)")
    out = save_png(picture, args.out)
    print(f"wrote {out}")
    summary["gated"]["density"] = float(gates.density())
    return summary


if __name__ == "__main__":
    main()
