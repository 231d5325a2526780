"""Watch a network learn a shortcut as a concept: TCAV of the corner marker during training.

Trains the demo's ``ShapesClassifier`` on the demo's data (``ShapesDataModule(shortcut=True)``, 48 px,
12,288 images, 6 epochs, seed 0: every training image carries its class's coloured corner marker,
validation images carry none) with :func:`~lightning_xai.demo.tcav_demo_monitor` attached and
no time budget: TCAV of the class "square" for its marker, its shape and the relative CAV
marker-vs-shape every epoch (``--every-n-train-steps N``: every N optimizer steps instead), with significance
(the default ``"effect"`` statistic and ``"prediction"`` test). Writes ``docs/tcav_shortcut.png`` and
logs everything to TensorBoard under ``--log-dir``.

Usage (from the repository root; about as long as ``lightning-xai demo``)::

    .venv/bin/python examples/tcav_shortcut.py [--epochs 6] [--every-n-train-steps 0] [--out docs/tcav_shortcut.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("PL_DISABLE_FORK", "1")


class _Accuracy:
    """Collects the validation accuracy of every epoch (a tiny callback)."""

    def __init__(self) -> None:
        import pytorch_lightning as pl

        class Collect(pl.Callback):
            def __init__(self) -> None:
                self.epochs: list[int] = []
                self.val: list[float] = []
                self.train: list[float] = []

            def on_validation_epoch_end(self, trainer, pl_module) -> None:
                if trainer.sanity_checking:
                    return
                metrics = trainer.callback_metrics
                self.epochs.append(trainer.global_step)
                self.val.append(float(metrics["val/acc"]))

        self.callback = Collect()


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--num-train", type=int, default=12288)
    parser.add_argument("--every-n-train-steps", type=int, default=0, help="0: once per epoch (the demo)")
    parser.add_argument("--lr", type=float, default=None, help="default: the demo's")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--n-random", type=int, default=10)
    parser.add_argument("--log-dir", default="tcav_logs")
    parser.add_argument("--out", default=str(ROOT / "docs" / "tcav_shortcut.png"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger

    from lightning_xai.data import ShapesDataModule
    from lightning_xai.demo import ShapesClassifier, tcav_demo_monitor
    from lightning_xai.render import save_png
    from lightning_xai.render.plots import tcav_history_plot

    pl.seed_everything(args.seed, verbose=False)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    dm = ShapesDataModule(
        batch_size=64, num_train=args.num_train, num_val=256, image_size=args.image_size, shortcut=True, seed=args.seed
    )
    model = ShapesClassifier(num_classes=dm.num_classes, **({"width": 16, "lr": args.lr} if args.lr else {}))
    monitor = tcav_demo_monitor(
        image_size=args.image_size,
        num_classes=dm.num_classes,
        n_random=args.n_random,
        seed=args.seed,
        every_n_train_steps=args.every_n_train_steps or None,
    )
    accuracy = _Accuracy().callback
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(args.log_dir, name="tcav"),
        callbacks=[monitor, accuracy],
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        log_every_n_steps=5,
        deterministic=True,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    seconds = time.perf_counter() - start

    steps = [int(h["step"] if args.every_n_train_steps else h["epoch"]) for h in monitor.history]
    curves, significant = {}, {}
    for c, concept in enumerate(monitor.concept_names):
        label = f"{concept} -> square"
        curves[label] = torch.stack([h["results"][0, c, 0, 0] for h in monitor.history])
        significant[label] = torch.stack([h["results"][0, c, 0, 3] > 0 for h in monitor.history])
    random_scores = torch.stack([h["results"][0, 0, 0, 9 + args.n_random :] for h in monitor.history]).float()
    mean, sd = random_scores.mean(1), random_scores.std(1)
    image = tcav_history_plot(
        steps,
        curves,
        significant,
        title="Class 'square': TCAV effect at features.6",
        band=(mean - sd, mean + sd),
        xlabel="training step" if args.every_n_train_steps else "epoch",
        ylabel="score change along CAV",
    )
    out = save_png(image, args.out)
    result = {
        "seconds": seconds,
        "out": str(out),
        "val_acc": accuracy.val,
        "steps": steps,
        "cav_accuracy": {
            c: [round(float(h["results"][0, i, 0, 4]), 2) for h in monitor.history]
            for i, c in enumerate(monitor.concept_names)
        },
        "random_mean": [round(float(x), 2) for x in mean],
        "tcav": {k: [round(float(x), 3) for x in v] for k, v in curves.items()},
        "significant": {k: [bool(x) for x in v] for k, v in significant.items()},
    }
    print(result)
    return result


if __name__ == "__main__":
    main()
