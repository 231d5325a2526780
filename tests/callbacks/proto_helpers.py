"""Importable helpers for the prototype callback tests (ddp_spawn pickles what it runs)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_xai.demo import ShapesClassifier
from lightning_xai.modules import PrototypeHead, prototype_parameter_groups, swap_head


class ProtoShapes(ShapesClassifier):
    """The demo CNN with its pool + dropout + fc swapped for a PrototypeHead, trained on its loss terms."""

    def __init__(self, num_classes: int = 3, width: int = 4, per_class: int = 2, dim: int = 4) -> None:
        super().__init__(num_classes=num_classes, width=width, dropout=0.25)
        swap_head(self, PrototypeHead(2 * width, num_classes, prototypes_per_class=per_class, prototype_dim=dim))

    @property
    def head(self) -> PrototypeHead:
        return self.pool  # swap_head put the head where the global pool was

    def _step(self, batch: tuple[Tensor, ...], stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        terms = self.head.loss_terms(logits, y)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value)
        self.log(f"{stage}/acc", (logits.argmax(1) == y).float().mean())
        return terms["loss"] if stage == "train" else F.cross_entropy(logits, y)

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(prototype_parameter_groups(self, {"backbone": 1e-3, "last_layer": 1e-3}))


import pytorch_lightning as pl  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402


class PushRecorder(pl.Callback):
    """Listed before PrototypePush: keeps the prototypes as they were before each push and the weights
    at each training-epoch end (after that epoch's validation and push), and (rank zero, at fit end)
    saves them with the final weights to ``out_file`` (ddp_spawn runs in children)."""

    def __init__(self, out_file: str) -> None:
        self.out_file = out_file
        self.before: dict[int, Tensor] = {}
        self.requires_grad: dict[int, dict[str, bool]] = {}
        self.after: dict[int, dict[str, Tensor]] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        head = pl_module.head
        self.requires_grad[trainer.current_epoch] = {
            "backbone": pl_module.features[0].weight.requires_grad,
            "prototypes": head.prototypes.requires_grad,
            "last_layer": head.last_layer.weight.requires_grad,
        }
        self.after[trainer.current_epoch] = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.before[trainer.current_epoch] = pl_module.head.prototypes.detach().cpu().clone()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
            saved = {"before": self.before, "after": self.after, "state": state, "world_size": trainer.world_size}
            torch.save(saved, self.out_file)


class LabelledImages(Dataset):
    """A map-style dataset with a ``labels`` attribute (to test the class-coverage check)."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]


class StateSnapshots(pl.Callback):
    """At each validation-epoch end, snapshots what the push must leave alone: the RNG, every module's
    mode, every parameter's requires_grad and .grad, BatchNorm statistics; plus the prototypes."""

    def __init__(self) -> None:
        self.snapshots: list[dict[str, Any]] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.snapshots.append(
            {
                "rng": torch.get_rng_state(),
                "modes": [m.training for m in pl_module.modules()],
                "requires_grad": [p.requires_grad for p in pl_module.parameters()],
                "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
                "buffers": {k: v.clone() for k, v in pl_module.state_dict().items() if "running" in k},
                "prototypes": pl_module.head.prototypes.detach().clone(),
            }
        )


class BatchLog(pl.Callback):
    """The training stream as seen by the training step: labels and image sums of every batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[int], float]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int):
        self.batches.append((batch[1].tolist(), float(batch[0].sum())))
