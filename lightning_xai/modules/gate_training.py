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
    """Train a classifier with class-specific gates after one of its layers (the authors' recipe).

    The gates act on the output of ``layer`` (default: the last ``nn.Conv2d``) through a forward
    hook that is active only on the gated path. Training alternates the paths **per epoch**, as the
    authors' ``train.py`` does: the first ``warmup_epochs`` epochs train the standard path only;
    after them, epoch ``e`` trains the gated path when ``e % period >= gated_from`` and the standard
    path otherwise (defaults 10, 3, 1: after warm-up one standard epoch, then two gated ones).

    * standard step: ``CE(model(x), y)``, logged ``train/loss_standard``;
    * gated step: ``gated_weight * CE(model_G(x, y), y) + gates.loss_terms()["sparsity"]``, logged
      ``train/loss_gated`` and ``train/sparsity``, then ``G`` is projected
      (:meth:`ClassSpecificGates.project_`: rows divided by their maximum, clamped to ``[0, 1]``).

    Each path has its own Adam optimiser (manual optimisation), as in the authors' code: the standard
    one holds the network at ``lr``; the gated one holds the network at ``gated_lr`` and the gates at
    ``gate_lr``. So the gates, and the gated optimiser's moments, stay still during standard epochs.
    The standard step adds ``0 * G.sum()`` so the gates are part of every step's graph (DDP requires
    every parameter to be used; the standard optimiser does not hold them). ``forward`` (and so
    validation, prediction and every explainer given this module or ``module.model``) is the standard
    path. Validation logs ``val/acc`` of the standard path. Every ``render_every_n_epochs`` training
    epochs rank zero logs ``xai/gates/density`` (share of gates above 0.1), ``xai/gates/l1`` (mean gate) and
    the filter-class matrix as the image ``xai/gates/assignment`` to every logger. Cost per step: one
    forward and one backward of the model, on either path.

    Args:
        model: The classifier (its ``forward`` returns ``[B, num_classes]`` logits).
        gates: The gates; ``gates.channels`` must equal the channels of ``layer``'s output (checked on
            the first gated step, before any optimiser step).
        layer: Dotted name of the gated layer; ``None``: the last ``nn.Conv2d``.
        gated_weight: ``lambda_1``.
        lr: Adam learning rate of the network on the standard path.
        gated_lr: Adam learning rate of the network on the gated path; ``None``: ``lr``.
        gate_lr: Adam learning rate of the gates (Adam moves each gate by about ``gate_lr`` per step
            whatever the gradient's scale).
        warmup_epochs: Epochs of standard-path training before the alternation starts.
        period: Length in epochs of one standard/gated cycle after warm-up.
        gated_from: Epoch ``e`` (after warm-up) is gated when ``e % period >= gated_from``.
        class_names: Names for the picture's columns.
        render_every_n_epochs: 0 turns the picture off.

    Raises:
        TypeError: ``model`` or ``gates`` has the wrong type.
        ValueError: Unknown ``layer`` (the message lists the valid names) or bad numbers (among them
            ``gated_from`` outside ``[0, period)``).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> module = ClassSpecificGateTraining(net, ClassSpecificGates(4, 2), warmup_epochs=1)
        >>> [module.uses_gated_path(e) for e in range(5)]
        [False, True, True, False, True]
    """

    def __init__(
        self,
        model: nn.Module,
        gates: ClassSpecificGates,
        layer: Optional[str] = None,
        gated_weight: float = 1.0,
        lr: float = 3e-3,
        gated_lr: Optional[float] = None,
        gate_lr: float = 0.05,
        warmup_epochs: int = 10,
        period: int = 3,
        gated_from: int = 1,
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
        self.gated_lr = self.lr if gated_lr is None else check_float("gated_lr", gated_lr, 0.0)
        self.gate_lr = check_float("gate_lr", gate_lr, 0.0)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.period = check_int("period", period, 1)
        self.gated_from = check_int("gated_from", gated_from, 0)
        if self.gated_from >= self.period:
            raise ValueError(
                f"Expected argument `gated_from` to be in [0, period) = [0, {self.period}), but got {gated_from} "
                "(no epoch would be gated)."
            )
        self.class_names = list(class_names) if class_names is not None else None
        self.render_every_n_epochs = check_int("render_every_n_epochs", render_every_n_epochs, 0)
        self.automatic_optimization = False
        self._labels: Optional[Tensor] = None
        # the bound hook pickles and deep-copies with the model (ddp_spawn, checkpoints of the whole module)
        get_layer(model, self.layer).register_forward_hook(self._gate_hook)

    def uses_gated_path(self, epoch: int) -> bool:
        """Whether training epoch ``epoch`` (0-based) trains the gated path."""
        return epoch >= self.warmup_epochs and epoch % self.period >= self.gated_from

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
        opt_standard, opt_gated = self.optimizers()  # type: ignore[misc]
        gated = self.uses_gated_path(self.current_epoch)
        if gated:
            sparsity = self.gates.loss_terms()["sparsity"]
            loss = self.gated_weight * F.cross_entropy(self.gated_forward(x, y), y) + sparsity
            self.log("train/loss_gated", loss)
            self.log("train/sparsity", sparsity)
        else:
            # 0 * G: the gates take part in every step's graph (DDP requires every parameter to be used)
            loss = F.cross_entropy(self.model(x), y) + 0.0 * self.gates.gate.sum()
            self.log("train/loss_standard", loss, prog_bar=True)
        opt = opt_gated if gated else opt_standard
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        if gated:
            self.gates.project_()
        return loss.detach()

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        self.log("val/acc", (self.model(x).argmax(dim=1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def on_train_epoch_end(self) -> None:
        if self.render_every_n_epochs and (self.current_epoch + 1) % self.render_every_n_epochs == 0:
            self._render_and_log()

    @rank_zero_only
    def _render_and_log(self) -> None:
        from lightning_xai.render.gates import render_gate_matrix
        from lightning_xai.sinks import sinks_for

        sinks = sinks_for(self.trainer.loggers)
        if not sinks:
            return
        gate = self.gates.gate.detach().cpu()
        image = render_gate_matrix(gate, self.class_names, title=f"class-specific gates, epoch {self.current_epoch}")
        scalars = {"xai/gates/density": float(self.gates.density()), "xai/gates/l1": float(gate.abs().mean())}
        for sink in sinks:
            sink.log_image("xai/gates/assignment", image, step=self.global_step)
            sink.log_scalars(scalars, step=self.global_step)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Two Adam optimisers: the standard path's (network at ``lr``) and the gated path's (network at
        ``gated_lr``, gates at ``gate_lr``)."""
        gate_ids = {id(p) for p in self.gates.parameters()}
        network = [p for p in self.parameters() if id(p) not in gate_ids and p.requires_grad]
        return [
            torch.optim.Adam(network, lr=self.lr),
            torch.optim.Adam(
                [
                    {"params": network, "lr": self.gated_lr},
                    {"params": list(self.gates.parameters()), "lr": self.gate_lr},
                ]
            ),
        ]
