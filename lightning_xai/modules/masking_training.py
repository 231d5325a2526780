"""Training a :class:`~lightning_xai.modules.masking.MaskingModel` beside a frozen classifier.

This file imports Lightning; the masking model itself does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.modules.masking import MaskingModel

__all__ = ["MaskingModelTraining"]


class MaskingModelTraining(pl.LightningModule):
    """Train a masking model with the paper's objective against a frozen classifier.

    Each step computes the classifier's features at the masker's layer, the mask for the batch's
    labels and :meth:`MaskingModel.loss_terms` (preserve, destroy, area, smoothness; each logged
    as ``train/<term>``); only the masker is optimised. The classifier stays in eval mode (also
    when Lightning calls ``train()``) with its parameters frozen. Validation logs ``val/loss`` and
    ``val/area``; every ``render_every_n_epochs`` epochs rank zero logs the first validation
    batch's masks over their images as ``xai/masking/masks`` to every logger.

    Args:
        classifier: The trained classifier, in eval mode, returning logits.
        masker: The masking model to train.
        lr: Adam learning rate.
        render_every_n_epochs: 0 turns the picture off.

    Raises:
        TypeError: Wrong types.
        ValueError: A classifier in training mode, or one whose layer does not match the masker.

    Examples:
        >>> clf = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> module = MaskingModelTraining(clf.eval(), MaskingModel(4, 2, in_channels=1))
        >>> module.masker.layer_name(module.classifier)
        '0'
    """

    def __init__(
        self, classifier: nn.Module, masker: MaskingModel, lr: float = 3e-3, render_every_n_epochs: int = 1
    ) -> None:
        super().__init__()
        if not isinstance(masker, MaskingModel):
            raise TypeError(f"Expected `masker` to be a MaskingModel, but got {type(masker).__name__}.")
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"Expected `classifier` to be an nn.Module, but got {type(classifier).__name__}.")
        if any(m.training for m in classifier.modules()):
            raise ValueError(
                "MaskingModelTraining: the classifier must be trained already and in eval mode; call "
                "`classifier.eval()` first."
            )
        masker.check(classifier)
        self.classifier = classifier
        self.masker = masker
        for p in classifier.parameters():
            p.requires_grad_(False)
        self.lr = check_float("lr", lr, 0.0)
        self.render_every_n_epochs = check_int("render_every_n_epochs", render_every_n_epochs, 0)
        self._render_batch: Optional[tuple[Tensor, Tensor]] = None

    def train(self, mode: bool = True) -> MaskingModelTraining:
        """Switch the masker's mode; the classifier stays in eval mode."""
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(self, x: Tensor, target: Optional[Tensor] = None) -> Tensor:
        """The masks ``[B, 1, H, W]`` for ``target`` (``None``: the predicted class)."""
        return self.masker.explain(self.classifier, x, target)

    def _terms(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            features, _ = self.masker.classifier_features(self.classifier, x)
        mask = self.masker(x, features, y)
        return self.masker.loss_terms(self.classifier, x, mask, y)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        terms = self._terms(x, y)
        loss = sum(terms.values())
        for name, value in terms.items():
            self.log(f"train/{name}", value)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        terms = self._terms(x, y)
        self.log("val/loss", sum(terms.values()), prog_bar=True, sync_dist=True)
        self.log("val/area", terms["area"] / max(self.masker.area_weight, 1e-12), sync_dist=True)
        if batch_idx == 0 and self._render_batch is None:
            self._render_batch = (x[:8].detach().cpu(), y[:8].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.render_every_n_epochs or self._render_batch is None:
            return
        if (self.current_epoch + 1) % self.render_every_n_epochs == 0:
            self._render_and_log()

    @rank_zero_only
    def _render_and_log(self) -> None:
        from lightning_xai.render import image_grid, overlay, to_display
        from lightning_xai.sinks import sinks_for

        sinks = sinks_for(self.trainer.loggers)
        if not sinks or self._render_batch is None:
            return
        x, y = self._render_batch
        with torch.no_grad():
            masks = self.masker.explain(self.classifier, x.to(self.device), y.to(self.device)).cpu()
        display = to_display(x)
        grid = image_grid(torch.cat([display, overlay(display, masks, signed=False)]), nrow=x.shape[0])
        for sink in sinks:
            sink.log_image("xai/masking/masks", grid, step=self.global_step, caption="inputs; masks over them")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.masker.parameters(), lr=self.lr)
