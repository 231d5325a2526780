"""Distil a CNN into a soft decision tree on real handwritten digits (Frosst & Hinton 2017).

On scikit-learn's digits (1,797 real 8x8 images, no download): train a small CNN teacher, then two
soft decision trees of the same depth on the raw 64 pixels with ``TreeDistillation``: one on the
teacher's soft targets at temperature T, one on the hard labels. Prints the test accuracy of the
teacher and of both trees (mixture and maximum-path-leaf read-outs) and their fidelity (agreement
with the teacher), averaged over seeds; logs the tree picture to TensorBoard and writes it as PNG.

    python examples/soft_tree_digits.py [--depth 6] [--epochs 40] [--seeds 0 1 2] [--out docs/soft_tree_digits.png]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.modules import SoftDecisionTree, TreeDistillation
from lightning_xai.render import save_png
from lightning_xai.render.tree import render_tree


def load_digits_split(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real digits ``[N, 1, 8, 8]`` in [0, 1]; a seeded 75/25 train/test split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(labels))
    train, test = order[:cut], order[cut:]
    return images[train], labels[train], images[test], labels[test]


def make_teacher() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(64 * 16, 10),
    )


def train_teacher(x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = make_teacher()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def train_tree(
    teacher: nn.Module,
    mode: str,
    data: tuple[torch.Tensor, ...],
    args: argparse.Namespace,
    seed: int,
    log_dir: str | None,
) -> SoftDecisionTree:
    train_x, train_y, test_x, test_y = data
    pl.seed_everything(seed, verbose=False)
    tree = SoftDecisionTree(64, 10, depth=args.depth, penalty_strength=args.penalty)
    module = TreeDistillation(
        teacher,
        tree,
        temperature=args.temperature,
        mode=mode,
        lr=args.lr,
        image_shape=(8, 8),
        render_every_n_epochs=args.epochs if log_dir else 0,
    )
    logger = TensorBoardLogger(log_dir, name=f"tree_{mode}") if log_dir else False
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=args.epochs,
    )
    train_loader = DataLoader(TensorDataset(train_x, train_y), batch_size=64, shuffle=True)
    trainer.fit(module, train_loader, DataLoader(TensorDataset(test_x, test_y), batch_size=512))
    return tree.eval()


def evaluate(tree: SoftDecisionTree, teacher_pred: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    with torch.no_grad():
        mixture = tree.predict(x.flatten(1), mode="mixture")
        max_path = tree.predict(x.flatten(1))
    return {
        "acc": (mixture == y).float().mean().item(),
        "acc_max_path": (max_path == y).float().mean().item(),
        "fidelity": (mixture == teacher_pred).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--penalty", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--log-dir", default="soft_tree_logs")
    parser.add_argument("--out", default="soft_tree_digits.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    rows: dict[str, list[dict[str, float]]] = {"teacher": [], "soft": [], "hard": []}
    start = time.perf_counter()
    last_tree, last_x = None, None
    for seed in args.seeds:
        data = load_digits_split(seed)
        train_x, train_y, test_x, test_y = data
        teacher = train_teacher(train_x, train_y, args.teacher_epochs, seed)
        with torch.no_grad():
            teacher_pred = teacher(test_x).argmax(dim=1)
        rows["teacher"].append({"acc": (teacher_pred == test_y).float().mean().item(), "fidelity": 1.0})
        log_dir = args.log_dir if seed == args.seeds[0] else None
        for mode in ("soft", "hard"):
            tree = train_tree(teacher, mode, data, args, seed, log_dir)
            rows[mode].append(evaluate(tree, teacher_pred, test_x, test_y))
            if mode == "soft":
                last_tree, last_x = tree, test_x[:1]
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]['acc']:.3f}" for k, v in rows.items()))

    summary = {k: {m: sum(r[m] for r in v) / len(v) for m in v[0]} for k, v in rows.items()}
    print(
        f"\ndigits, depth {args.depth}, T={args.temperature}, {len(args.seeds)} seed(s), "
        f"{time.perf_counter() - start:.0f} s"
    )
    print(f"{'model':<22}{'test acc':>10}{'max-path acc':>14}{'fidelity':>10}")
    names = {"teacher": "teacher CNN", "soft": "tree, distilled (soft)", "hard": "tree, hard labels"}
    for key, name in names.items():
        s = summary[key]
        print(f"{name:<22}{s['acc']:>10.3f}{s.get('acc_max_path', float('nan')):>14.3f}{s['fidelity']:>10.3f}")

    assert last_tree is not None and last_x is not None
    with torch.no_grad():
        path = last_tree.path_probabilities(last_x.flatten(1))[0]
    picture = render_tree(
        last_tree.inner.weight,
        last_tree.leaf_distributions(),
        (8, 8),
        path_probs=path,
        image=last_x[0],
        max_depth=min(args.depth, 4),
        title=f"soft decision tree distilled on digits (depth {args.depth})",
    )
    out = save_png(picture, args.out)
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()
