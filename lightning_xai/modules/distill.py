"""Training a :class:`~lightning_xai.modules.tree.SoftDecisionTree` with Lightning: distilled from a
frozen teacher's soft targets (Frosst & Hinton 2017) or on hard labels, for comparison.

This file imports Lightning; the tree itself (:mod:`lightning_xai.modules.tree`) does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.modules.tree import SoftDecisionTree

__all__ = ["TreeDistillation"]

_MODES = ("soft", "hard")


class TreeDistillation(pl.LightningModule):
    """Train a soft decision tree on a frozen teacher's soft targets, or on the labels.

    Each training step flattens the batch's inputs ``x`` to ``[B, tree.in_features]`` and minimises
    the tree's :meth:`~lightning_xai.modules.tree.SoftDecisionTree.loss_terms` (the paper's
    path-weighted leaf cross-entropy plus the balanced-split penalty) against

    * ``mode="soft"``: the teacher's soft targets ``softmax(teacher(x) / temperature)``;
    * ``mode="hard"``: the labels ``y`` (the teacher is then optional and only used for fidelity).

    The temperature softens the teacher only: the leaves learn ``softmax(phi)`` against the
    softened targets, and the tree is read at temperature 1. The teacher stays frozen and in eval
    mode throughout (``train()`` on this module does not switch it), its parameters are not
    optimised and it is run without gradients.

    Validation logs ``val/acc`` (mixture prediction), ``val/acc_max_path`` (maximum-path leaf),
    ``val/teacher_acc`` and ``val/fidelity`` (agreement of the tree's mixture prediction with the
    teacher's), and every ``render_every_n_epochs`` epochs a picture of the tree (filters, leaf
    distributions, the path of the first validation input) as ``xai/tree/structure`` to every logger
    (TensorBoard, W&B, or PNG files), on rank zero.

    Batches are ``(x, y, ...)`` tuples. A teacher returning probabilities (rows on the simplex)
    instead of logits, or anything but a ``[B, num_classes]`` tensor, fails on the first batch with
    a ``ValueError`` naming the problem, before any optimiser step.

    Args:
        teacher: The trained network, in eval mode, returning logits ``[B, num_classes]``; may be
            ``None`` with ``mode="hard"``.
        tree: The tree to train.
        temperature: Softening temperature ``T > 0`` of the teacher's logits (``mode="soft"``).
        mode: ``"soft"`` (distillation) or ``"hard"`` (labels).
        lr: Adam learning rate.
        image_shape: Shape of one input (e.g. ``(1, 8, 8)``) for drawing the filters; ``None``
            takes it from the first validation batch.
        class_names: Names for the tree picture.
        render_every_n_epochs: Draw the tree every this many validation epochs (0: never).
        render_max_depth: Levels drawn (see :func:`lightning_xai.render.tree.render_tree`).

    Raises:
        TypeError: ``tree`` is not a :class:`SoftDecisionTree`, or ``teacher`` not an ``nn.Module``.
        ValueError: Bad ``mode`` or ``temperature``; a teacher in training mode; no teacher with
            ``mode="soft"``.

    Examples:
        >>> teacher = nn.Linear(4, 3).eval()
        >>> module = TreeDistillation(teacher, SoftDecisionTree(4, 3, depth=2), temperature=2.0)
        >>> module.mode, module.temperature
        ('soft', 2.0)
    """

    def __init__(
        self,
        teacher: Optional[nn.Module],
        tree: SoftDecisionTree,
        temperature: float = 2.0,
        mode: str = "soft",
        lr: float = 1e-2,
        image_shape: Optional[Sequence[int]] = None,
        class_names: Optional[Sequence[str]] = None,
        render_every_n_epochs: int = 1,
        render_max_depth: int = 4,
    ) -> None:
        super().__init__()
        if not isinstance(tree, SoftDecisionTree):
            raise TypeError(f"Expected `tree` to be a SoftDecisionTree, but got {type(tree).__name__}.")
        if mode not in _MODES:
            raise ValueError(f"Expected argument `mode` to be one of {_MODES}, but got {mode!r}.")
        if teacher is not None and not isinstance(teacher, nn.Module):
            raise TypeError(f"Expected `teacher` to be an nn.Module or None, but got {type(teacher).__name__}.")
        if teacher is None and mode == "soft":
            raise ValueError("TreeDistillation(mode='soft') distils a teacher's soft targets: pass `teacher`.")
        if teacher is not None and any(m.training for m in teacher.modules()):
            training = [n or "<root>" for n, m in teacher.named_modules() if m.training][:5]
            raise ValueError(
                "TreeDistillation: the teacher must be in eval mode (its dropout and batch-norm statistics must "
                f"not change while it teaches); call `teacher.eval()` first. Modules in training mode: {training}."
            )
        temperature = check_float("temperature", temperature, 0.0)
        if temperature <= 0:
            raise ValueError(f"Expected argument `temperature` to be > 0, but got {temperature}.")
        self.temperature = temperature
        self.mode = mode
        self.lr = check_float("lr", lr, 0.0)
        self.render_every_n_epochs = check_int("render_every_n_epochs", render_every_n_epochs, 0)
        self.render_max_depth = check_int("render_max_depth", render_max_depth, 1)
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.tree = tree
        self.teacher = teacher
        if teacher is not None:
            for p in teacher.parameters():
                p.requires_grad_(False)
        self._teacher_checked = False
        self._render_input: Optional[Tensor] = None

    # -- the teacher stays frozen -----------------------------------------------------------------
    def train(self, mode: bool = True) -> TreeDistillation:
        """Switch the tree's mode; the teacher stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        """The tree's log-probabilities for ``x`` (flattened): logits for the rest of the library."""
        return self.tree(x.flatten(1))

    def predict_proba(self, x: Tensor) -> Tensor:
        """The tree's class probabilities for ``x`` (flattened); rows sum to one."""
        return self.tree.predict_proba(x.flatten(1))

    @torch.no_grad()
    def teacher_logits(self, x: Tensor) -> Tensor:
        """The teacher's logits for ``x``, checked on the first call.

        Raises:
            ValueError: The teacher returns something other than ``[B, num_classes]`` logits.
        """
        assert self.teacher is not None
        out = self.teacher(x)
        if not self._teacher_checked:
            self._check_teacher_output(out, x.shape[0])
            self._teacher_checked = True
        return out

    def _check_teacher_output(self, out: Any, batch: int) -> None:
        classes = self.tree.num_classes
        if not isinstance(out, Tensor) or not out.is_floating_point():
            raise ValueError(
                f"TreeDistillation: the teacher must return a float tensor of logits [B, {classes}], but it returned "
                f"{type(out).__name__}{'' if not isinstance(out, Tensor) else ' of dtype ' + str(out.dtype)}."
            )
        if tuple(out.shape) != (batch, classes):
            raise ValueError(
                f"TreeDistillation: the teacher must return logits [B, {classes}] (one per class of the tree), but "
                f"returned shape {tuple(out.shape)} for a batch of {batch}."
            )
        if batch > 0 and bool((out >= 0).all()) and torch.allclose(out.sum(dim=1), out.new_ones(batch), atol=1e-4):
            raise ValueError(
                "TreeDistillation: the teacher returns probabilities (every row is non-negative and sums to one), "
                "not logits; softening by a temperature needs logits: drop the final softmax."
            )

    # -- training ---------------------------------------------------------------------------------
    def _targets(self, x: Tensor, y: Tensor) -> Tensor:
        if self.mode == "hard":
            return y
        return (self.teacher_logits(x) / self.temperature).softmax(dim=1)

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        terms = self.tree.loss_terms(x.flatten(1), self._targets(x, y))
        loss = sum(terms.values())
        for name, value in terms.items():
            self.log(f"train/{name}", value)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/beta", self.tree.beta.detach())
        return loss

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        x, y = batch[0], batch[1]
        flat = x.flatten(1)
        pred = self.tree.predict(flat, mode="mixture")
        self.log("val/acc", (pred == y).float().mean(), prog_bar=True, sync_dist=True)
        self.log("val/acc_max_path", (self.tree.predict(flat) == y).float().mean(), sync_dist=True)
        if self.teacher is not None:
            teacher_pred = self.teacher_logits(x).argmax(dim=1)
            self.log("val/teacher_acc", (teacher_pred == y).float().mean(), sync_dist=True)
            self.log("val/fidelity", (pred == teacher_pred).float().mean(), sync_dist=True)
        if batch_idx == 0 and self._render_input is None:
            self._render_input = x[:1].detach().cpu()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self.render_every_n_epochs == 0:
            return
        if (self.current_epoch + 1) % self.render_every_n_epochs:
            return
        self._render_and_log()

    @rank_zero_only
    def _render_and_log(self) -> None:
        from lightning_xai.render.tree import render_tree
        from lightning_xai.sinks import sinks_for

        sinks = sinks_for(self.trainer.loggers)
        if not sinks or self._render_input is None:
            return
        x = self._render_input
        shape = self.image_shape or tuple(x.shape[1:])
        with torch.no_grad():
            path = self.tree.path_probabilities(x.to(self.device).flatten(1))[0]
        image = render_tree(
            self.tree.inner.weight,
            self.tree.leaf_distributions(),
            shape,
            path_probs=path,
            image=x[0].reshape(shape),
            class_names=self.class_names,
            max_depth=self.render_max_depth,
            title=f"soft decision tree ({self.mode}), epoch {self.current_epoch}",
        )
        for sink in sinks:
            sink.log_image("xai/tree/structure", image, step=self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.tree.parameters(), lr=self.lr)
