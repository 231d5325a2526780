"""The training recipe of class-specific gates (Liang et al. 2020) as a LightningModule.

This file imports Lightning; :class:`~lightning_xai.modules.gates.ClassSpecificGates` does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import get_layer, last_conv_layer_name
from lightning_xai.modules.gates import ClassSpecificGates

__all__ = ["ClassSpecificGateTraining"]


class ClassSpecificGateTraining(pl.LightningModule):
    """Train a classifier with class-specific gates after one of its layers (the recipe).

    The gates act on the output of ``layer`` (default: the last ``nn.Conv2d``) through a forward
    hook that is active only on the gated path. Training steps alternate (even batch index:
    standard path, odd: gated path):

    * standard step: ``CE(model(x), y)``, logged ``train/loss_standard``;
    * gated step: ``gated_weight * CE(model_G(x, y), y) + gates.loss_terms()["sparsity"]``, logged
      ``train/loss_gated`` and ``train/sparsity``;

    the standard step adds ``0 * G.sum()`` so the gates are part of every step's graph (DDP requires
    every parameter to be used; Adam's momentum still moves ``G`` a little on standard steps). One
    optimiser (Adam, the gates in their own parameter group with ``gate_lr``) updates the network and the gates; after every step ``G`` is projected
    onto ``[0, 1]``. ``forward`` (and so validation, prediction and every explainer given this
    module or ``module.model``) is the standard path. Validation logs ``val/acc`` of the standard
    path. Every ``render_every_n_epochs`` training epochs rank zero logs ``gates/density`` (share of
    gates above 0.1), ``gates/l1`` (mean gate) and the filter-class matrix as the image
    ``gates/assignment`` to every logger.

    Args:
        model: The classifier (its ``forward`` returns ``[B, num_classes]`` logits).
        gates: The gates; ``gates.channels`` must equal the channels of ``layer``'s output (checked on
            the first gated step, before any optimiser step).
        layer: Dotted name of the gated layer; ``None``: the last ``nn.Conv2d``.
        gated_weight: ``lambda_1``.
        lr: Adam learning rate of the network.
        gate_lr: Adam learning rate of the gates (Adam moves each gate by about ``gate_lr`` per step
            whatever the gradient's scale, so with the network's small rate the gates could not
            travel from 1 to 0 in a short training).
        class_names: Names for the picture's columns.
        render_every_n_epochs: 0 turns the picture off.

    Raises:
        TypeError: ``model`` or ``gates`` has the wrong type.
        ValueError: Unknown ``layer`` (the message lists the valid names) or bad numbers.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> module = ClassSpecificGateTraining(net, ClassSpecificGates(4, 2))
        >>> module.layer
        '0'
    """

    def __init__(
        self,
        model: nn.Module,
        gates: ClassSpecificGates,
        layer: Optional[str] = None,
        gated_weight: float = 1.0,
        lr: float = 3e-3,
        gate_lr: float = 0.05,
        class_names: Optional[Sequence[str]] = None,
        render_every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}.")
        if not isinstance(gates, ClassSpecificGates):
            raise TypeError(f"Expected `gates` to be ClassSpecificGates, but got {type(gates).__name__}.")
        self.layer = layer if layer is not None else last_conv_layer_name(model, method="ClassSpecificGateTraining")
        target = get_layer(model, self.layer, method="ClassSpecificGateTraining")
        out_channels = getattr(target, "out_channels", None) or getattr(target, "num_features", None)
        if isinstance(out_channels, int) and out_channels != gates.channels:
            raise ValueError(
                f"ClassSpecificGateTraining: layer {self.layer!r} has {out_channels} output channels but the gates "
                f"have channels={gates.channels}; build ClassSpecificGates({out_channels}, {gates.num_classes})."
            )
        self.model = model
        self.gates = gates
        self.gated_weight = check_float("gated_weight", gated_weight, 0.0)
        self.lr = check_float("lr", lr, 0.0)
        self.gate_lr = check_float("gate_lr", gate_lr, 0.0)
        self.class_names = list(class_names) if class_names is not None else None
        self.render_every_n_epochs = check_int("render_every_n_epochs", render_every_n_epochs, 0)
        self._labels: Optional[Tensor] = None
        # the bound hook pickles and deep-copies with the model (ddp_spawn, checkpoints of the whole module)
        get_layer(model, self.layer).register_forward_hook(self._gate_hook)

    def _gate_hook(self, module: nn.Module, args: Any, output: Tensor) -> Optional[Tensor]:
        if self._labels is None:
            return None
        return self.gates(output, self._labels)

    def forward(self, x: Tensor) -> Tensor:
        """The standard path."""
        return self.model(x)

    def gated_forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """The gated path: the output of ``layer`` multiplied by ``G[:, labels]``."""
        self._labels = labels
        try:
            return self.model(x)
        finally:
            self._labels = None

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        if batch_idx % 2 == 0:
            # 0 * G: the gates take part in every step's graph (DDP requires every parameter to be used)
            loss = F.cross_entropy(self.model(x), y) + 0.0 * self.gates.gate.sum()
            self.log("train/loss_standard", loss, prog_bar=True)
            return loss
        sparsity = self.gates.loss_terms()["sparsity"]
        loss = self.gated_weight * F.cross_entropy(self.gated_forward(x, y), y) + sparsity
        self.log("train/loss_gated", loss)
        self.log("train/sparsity", sparsity)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.gates.project_()

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        self.log("val/acc", (self.model(x).argmax(dim=1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        if self.render_every_n_epochs and (self.current_epoch + 1) % self.render_every_n_epochs == 0:
            self._render_and_log()

    @rank_zero_only
    def _render_and_log(self) -> None:
        from lightning_xai.render.gates import render_gate_matrix
        from lightning_xai.render.sinks import sinks_for

        sinks = sinks_for(self.trainer.loggers)
        if not sinks:
            return
        gate = self.gates.gate.detach().cpu()
        image = render_gate_matrix(gate, self.class_names, title=f"class-specific gates, epoch {self.current_epoch}")
        scalars = {"gates/density": float(self.gates.density()), "gates/l1": float(gate.abs().mean())}
        for sink in sinks:
            sink.log_image("gates/assignment", image, step=self.global_step)
            sink.log_scalars(scalars, step=self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        gate_ids = {id(p) for p in self.gates.parameters()}
        network = [p for p in self.parameters() if id(p) not in gate_ids and p.requires_grad]
        return torch.optim.Adam(
            [{"params": network, "lr": self.lr}, {"params": list(self.gates.parameters()), "lr": self.gate_lr}]
        )
