"""Explanation quality during training, and Adebayo et al.'s sanity check, on the shapes data.

Trains the demo's CNN on :class:`~lightning_xai.data.ShapesDataModule` (shape masks as ground
truth; nothing is downloaded) with two monitors attached:

* ``MetricsMonitor``: deletion AUC, pointing game and mask AUPR of gradient, Grad-CAM and guided
  backprop maps, per epoch;
* ``SanityCheckMonitor``: the cascading model-parameter randomisation curve of the same three
  explainers, per epoch.

Then it reads the logged curves back from TensorBoard and writes the two README figures (and,
with ``--retrain``, runs the data randomisation test with a copy trained on permuted labels
through a small Trainer; ROAR, which retrains once per removed fraction, has its own example,
``examples/roar_digits.py``):

* ``docs/metrics_curve.png``: the pointing game of each explainer over training;
* ``docs/sanity_randomization.png``: the trained model's cascading randomisation curve (gradient
  and Grad-CAM decorrelate, guided backprop stays similar to the original).

    python examples/metrics_sanity.py [--epochs 6] [--log-dir xai_logs] [--docs docs] [--retrain]
    tensorboard --logdir xai_logs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import GradCAM, GuidedBackprop, Saliency
from lightning_xai.callbacks import MetricsMonitor, SanityCheckMonitor
from lightning_xai.data import ShapesDataModule
from lightning_xai.demo import ShapesClassifier
from lightning_xai.metrics.functional import data_randomization, parameter_randomization, randomization_layers
from lightning_xai.render import save_png
from lightning_xai.render.quality_plots import metric_curve_plot, randomization_plot

NAMES = ["gradient", "grad_cam", "guided_backprop"]


def explainers() -> list:
    return [Saliency(), GradCAM(), GuidedBackprop()]


def fit_copy(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, epochs: int, seed: int = 0
) -> ShapesClassifier:
    """A fresh demo CNN trained on ``(images, labels)`` with a small Lightning Trainer."""
    pl.seed_everything(seed, verbose=False)
    model = ShapesClassifier(num_classes=num_classes, width=16)
    loader = DataLoader(TensorDataset(images.cpu(), labels.cpu()), batch_size=64, shuffle=True)
    trainer = pl.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1,
    )  # fmt: skip
    trainer.fit(model, loader)
    return model.eval()


def retraining_checks(dm: ShapesDataModule, model: ShapesClassifier, epochs: int) -> dict:
    """Data randomisation (Adebayo et al.): maps of a copy trained on permuted labels."""
    train, val = dm.train_set, dm.val_set
    k = dm.num_classes
    gen = torch.Generator().manual_seed(0)
    permuted = train.labels[torch.randperm(len(train.labels), generator=gen)]
    random_model = fit_copy(train.images, permuted, k, epochs)
    x, y = val.images[:64], val.labels[:64]
    out: dict[str, object] = {}
    for name, explainer in zip(NAMES, explainers()):
        out[f"data_randomization/{name}"] = float(data_randomization(model, random_model, x, explainer, y).mean())
    return out


def read_scalars(log_dir: str, prefix: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(Path(log_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if tag.startswith(prefix):
                out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--num-train", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--probe", type=int, default=16)
    parser.add_argument("--log-dir", default="xai_logs")
    parser.add_argument("--docs", default="docs")
    parser.add_argument("--retrain", action="store_true", help="also run the data randomisation test")
    parser.add_argument("--retrain-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    pl.seed_everything(0, verbose=False)
    dm = ShapesDataModule(batch_size=64, num_train=args.num_train, num_val=256, image_size=args.image_size, seed=0)
    model = ShapesClassifier(num_classes=dm.num_classes, width=16)
    metrics = MetricsMonitor(
        explainers(),
        metrics=["deletion_auc", "pointing_game", "mask_aupr"],
        names=NAMES,
        num_samples=args.probe,
        metric_kwargs={"deletion_auc": {"steps": 10}},
    )
    sanity = SanityCheckMonitor(explainers(), names=NAMES, num_samples=args.probe)
    logger = TensorBoardLogger(args.log_dir, name="metrics_sanity")
    trainer = pl.Trainer(
        max_epochs=args.epochs, logger=logger, callbacks=[metrics, sanity], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="auto", devices=1,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    logger.finalize("success")

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    scalars = read_scalars(logger.log_dir, "xai/metrics/")
    epochs = list(range(1, args.epochs + 1))
    series = {}
    for name in NAMES:
        points = sorted(scalars.get(f"xai/metrics/{name}/pointing_game", []))
        if len(points) == len(epochs):
            series[name] = [v for _, v in points]
    curve_path = save_png(
        metric_curve_plot(epochs, series, ylabel="pointing game (probe mean)", title="Pointing game over training"),
        docs / "metrics_curve.png",
    )

    # the trained model's randomisation curve on the probe set (what the monitor logged last)
    probe = sanity.probe.to(model.device)
    layers = randomization_layers(model)
    curves, spread = {}, {}
    for name, explainer in zip(NAMES, explainers()):
        sims = parameter_randomization(model, probe.inputs, explainer, mode="cascading")
        curves[name], spread[name] = sims.mean(dim=1), sims.std(dim=1, unbiased=False)
    plot = randomization_plot(layers, curves, spread=spread, title="Cascading randomisation of the trained model")
    sanity_path = save_png(plot, docs / "sanity_randomization.png")
    val_acc = float(trainer.callback_metrics.get("val/acc", torch.tensor(float("nan"))))
    summary = {
        "val_acc": val_acc,
        "pointing_game": {k: v[-1] for k, v in series.items()},
        "randomization_top2": {k: float(v[:2].mean()) for k, v in curves.items()},
        "figures": [str(curve_path), str(sanity_path)],
    }
    if args.retrain:
        summary.update(retraining_checks(dm, model, args.retrain_epochs))
    print(summary)
    return summary


if __name__ == "__main__":
    main()
