"""ProtoPNet on the shapes data: a prototype head against the same backbone's linear head.

As in the paper, the prototype network starts from a trained backbone: a small CNN is first trained
with its own linear head; then two copies are fine-tuned for the same number of epochs, one keeping
its linear head, one with the linear head swapped for a :class:`~lightning_xai.modules.PrototypeHead`
(``swap_head``) and trained in the paper's stages (warm-up, joint, push, last layer) by
:class:`~lightning_xai.callbacks.PrototypeStages` and :class:`~lightning_xai.callbacks.PrototypePush`,
with :class:`~lightning_xai.callbacks.PrototypeMonitor` logging "this looks like that" for a probe
set every epoch. Prints both validation accuracies, and for the prototype fit the last logged
``val/acc`` next to a fresh ``trainer.validate`` of the returned model (equal: the staging ends on a
validated model); writes TensorBoard logs and, with ``--docs``, the pictures used in the README.

The authors' code runs 20 last-layer epochs after every push (``PrototypeStages``' default); this
short example runs ``--last-layer-epochs 2`` to stay within a few minutes.

    python examples/prototypes_shapes.py [--num-train 2048] [--pretrain-epochs 6] [--epochs 6]
                                         [--log-dir logs/prototypes] [--docs docs]

A few minutes on 2 CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor, nn

from lightning_xai.callbacks import PrototypeMonitor, PrototypePush, PrototypeStages
from lightning_xai.data import ShapesDataModule
from lightning_xai.modules import PrototypeHead, find_prototype_head, prototype_parameter_groups, swap_head


class Backbone(nn.Module):
    """Three conv/BN/ReLU blocks (two max-pools) and a global-average-pool + linear head."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class Classifier(pl.LightningModule):
    """Trains ``net`` with cross-entropy, or with the prototype head's loss terms when it has one."""

    def __init__(self, net: nn.Module, learning_rates: dict[str, float]) -> None:
        super().__init__()
        self.net = net
        self.learning_rates = learning_rates

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _head(self) -> Optional[PrototypeHead]:
        try:
            return find_prototype_head(self.net)[1]
        except ValueError:
            return None

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        head = self._head()
        if head is None:
            loss = F.cross_entropy(logits, y)
        else:
            terms = head.loss_terms(logits, y)
            self.log_dict({f"train/{k}": v for k, v in terms.items()})
            loss = terms["loss"]
        self.log("train/acc", (logits.argmax(1) == y).float().mean())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        self.log("val/acc", (self(x).argmax(1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self._head() is not None:
            return torch.optim.Adam(prototype_parameter_groups(self.net, self.learning_rates))
        fc = list(self.net.fc.parameters())
        ids = {id(p) for p in fc}
        backbone = [p for p in self.net.parameters() if id(p) not in ids]
        return torch.optim.Adam(
            [
                {"params": backbone, "lr": self.learning_rates["backbone"]},
                {"params": fc, "lr": self.learning_rates["last_layer"]},
            ]
        )


def accuracy(model: nn.Module, dm: ShapesDataModule) -> float:
    """Validation accuracy in eval mode."""
    assert dm.val_set is not None
    model.eval()
    with torch.no_grad():
        correct = sum(
            (model(dm.val_set.images[i : i + 256]).argmax(1) == dm.val_set.labels[i : i + 256]).sum().item()
            for i in range(0, len(dm.val_set), 256)
        )
    return correct / len(dm.val_set)


def fit(
    module: Classifier, dm: ShapesDataModule, epochs: int, log_dir: Path, name: str, callbacks: list
) -> tuple[float, float, float]:
    """Fit; returns (seconds, the last logged val/acc, val/acc of the returned model validated again)."""
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(str(log_dir), name=name),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    seconds = time.perf_counter() - start
    logged = trainer.callback_metrics["val/acc"].item()
    (validated,) = trainer.validate(module, datamodule=dm, verbose=False)
    for logger in trainer.loggers:
        logger.finalize("success")
    return seconds, logged, validated["val/acc"]


def save_pictures(log_dir: Path, docs: Path) -> list[Path]:
    """The last gallery and two "this looks like that" figures, read back from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    docs.mkdir(parents=True, exist_ok=True)
    written = []
    for events in sorted(log_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        wanted = {
            "xai/prototypes/gallery": "prototypes_gallery.png",
            "xai/prototypes/this_looks_like_that/0": "prototypes_this_looks_like_that_0.png",
            "xai/prototypes/this_looks_like_that/2": "prototypes_this_looks_like_that_2.png",
        }
        for tag, name in wanted.items():
            if tag in acc.Tags()["images"]:
                path = docs / name
                path.write_bytes(acc.Images(tag)[-1].encoded_image_string)
                written.append(path)
    return written


def main(argv: Optional[list[str]] = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-train", type=int, default=2048)
    parser.add_argument("--num-val", type=int, default=1024)
    parser.add_argument("--num-classes", type=int, default=4)
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs of both heads")
    parser.add_argument("--last-layer-epochs", type=int, default=2)
    parser.add_argument("--prototypes-per-class", type=int, default=5)
    parser.add_argument("--prototype-dim", type=int, default=32)
    parser.add_argument("--log-dir", type=Path, default=Path("logs/prototypes"))
    parser.add_argument("--docs", type=Path, default=None, help="write the README pictures here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs <= args.last_layer_epochs:
        parser.error("--epochs must exceed --last-layer-epochs (the push comes before the last-layer stage)")
    torch.set_num_threads(args.threads)

    pl.seed_everything(args.seed, verbose=False)
    dm = ShapesDataModule(
        batch_size=64, num_train=args.num_train, num_val=args.num_val, num_classes=args.num_classes, seed=args.seed
    )
    dm.setup("fit")

    # 1. the backbone with its own linear head, trained from scratch
    backbone = Backbone(args.num_classes)
    pretrain_s, _, _ = fit(
        Classifier(backbone, {"backbone": 1e-3, "last_layer": 1e-3}),
        dm,
        args.pretrain_epochs,
        args.log_dir,
        "pretrain",
        [],
    )
    pretrained = accuracy(backbone, dm)

    # 2a. the same backbone, linear head kept, fine-tuned as long as the prototype network
    rates = {"backbone": 1e-4, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-3}
    pl.seed_everything(args.seed + 1, verbose=False)
    linear_net = copy.deepcopy(backbone)
    linear_s, _, _ = fit(Classifier(linear_net, rates), dm, args.epochs, args.log_dir, "linear", [])
    linear = accuracy(linear_net, dm)

    # 2b. the same backbone with a prototype head, in the paper's stages
    pl.seed_everything(args.seed + 1, verbose=False)
    proto_net = copy.deepcopy(backbone)
    head = PrototypeHead(
        backbone.fc.in_features,
        args.num_classes,
        prototypes_per_class=args.prototypes_per_class,
        prototype_dim=args.prototype_dim,
    )
    swap_head(proto_net, head)
    push_every = args.epochs - max(args.last_layer_epochs, 1)  # the push never on the final epoch
    push = PrototypePush(every_n_epochs=push_every)
    callbacks = [
        PrototypeStages(warm_epochs=min(2, push_every - 1), last_layer_epochs=args.last_layer_epochs),
        push,
        PrototypeMonitor(num_samples=4, prototypes_per_image=3, class_names=dm.classes),
    ]
    proto_s, proto_logged, proto_validated = fit(
        Classifier(proto_net, rates), dm, args.epochs, args.log_dir, "prototype", callbacks
    )
    prototype = accuracy(proto_net, dm)

    results = {
        "pretrained_linear_acc": pretrained,
        "linear_acc": linear,
        "prototype_acc": prototype,
        "difference_points": 100 * (prototype - linear),
        "prototype_last_logged_val_acc": proto_logged,
        "prototype_validated_val_acc": proto_validated,
        "pretrain_s": pretrain_s,
        "linear_s": linear_s,
        "prototype_s": proto_s,
        "push_s": push._spent,  # time inside the push callback's runs (push + gallery), training thread
    }
    print(f"backbone + linear head after {args.pretrain_epochs} epochs: {pretrained:.2%}")
    print(f"fine-tuned {args.epochs} more epochs, linear head:    {linear:.2%}  ({linear_s:.0f} s)")
    print(f"fine-tuned {args.epochs} more epochs, prototype head: {prototype:.2%}  ({proto_s:.0f} s)")
    print(f"difference: {results['difference_points']:+.1f} points; pushes at epochs {push.push_epochs}")
    print(f"prototype fit: last logged val/acc {proto_logged:.4f}, returned model validated {proto_validated:.4f}")
    print(
        f"time in the push callback: {push._spent:.1f} s; one epoch of the prototype fit: {proto_s / args.epochs:.1f} s"
    )
    if args.docs is not None:
        for path in save_pictures(args.log_dir / "prototype", args.docs):
            print(f"wrote {path}")
    return results


if __name__ == "__main__":
    main()
