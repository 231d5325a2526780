"""Class-specific filter gates (Liang et al. 2020, "Training interpretable convolutional neural
networks by differentiating class-specific filters").

A learnable gate matrix ``G`` in ``[0, 1]^{K x C}`` (K filters of the last convolution, C classes)
sits after the last convolution. Training alternates two paths through the same network:

* the **standard path**: the network as it is, cross-entropy ``CE(f(x), y)``;
* the **gated (CSG) path**: the feature maps of filter ``k`` are multiplied by ``G[k, y]`` for the
  input's true class ``y``, cross-entropy ``lambda_1 CE(f_G(x, y), y)`` plus the sparsity
  regulariser, a hinge on the L1 norm: ``lambda_2 * relu(||G||_1 - budget * K * C)`` (the authors'
  code, ``LearnableMaskLayer.loss_function``: zero while at most a ``budget`` = 0.2 share of the
  gate mass is open, linear above).

The sparsity pushes each filter to serve few classes; the gated path's cross-entropy keeps open the
gates a class needs. After every gated optimiser step ``G`` is projected
(:meth:`ClassSpecificGates.project_`, the authors' ``clip_lmask``): each filter's row is divided by
its maximum over the classes, then clamped onto ``[0, 1]``, so every filter stays fully open for at
least one class (a filter cannot close for every class). Gates start at 0.5. At inference no label
is known: the standard path is used, and its filters have become class-specific, which is what
sharpens CAM-style localisation.

:class:`ClassSpecificGates` is the plain module (no Lightning); the recipe above is the
LightningModule :class:`lightning_xai.modules.gate_training.ClassSpecificGateTraining`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int

__all__ = ["ClassSpecificGates"]


class ClassSpecificGates(nn.Module):
    """A filter x class gate matrix for the feature maps of the last convolution.

    ``gates(features, labels)`` multiplies channel ``k`` of sample ``i`` by ``G[k, labels[i]]`` (the
    gated path); ``gates(features)`` (no labels) returns ``features`` unchanged (the standard path).

    Args:
        channels: Number of filters ``K`` of the gated layer (its output channels).
        num_classes: Number of classes ``C``.
        sparsity: ``lambda_2``, the strength of the hinge L1 regulariser in :meth:`loss_terms` (the
            authors' default ``--lambda_reg`` is 1e-3).
        budget: Share of the ``K x C`` gate mass the regulariser leaves free (the authors' 0.2).
        init: Initial value of every gate, in ``[0, 1]`` (the authors' 0.5).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range.

    Examples:
        >>> gates = ClassSpecificGates(channels=4, num_classes=3)
        >>> features = torch.rand(2, 4, 5, 5)
        >>> gates(features, torch.tensor([0, 2])).shape
        torch.Size([2, 4, 5, 5])
        >>> torch.equal(gates(features), features)
        True
    """

    def __init__(
        self, channels: int, num_classes: int, sparsity: float = 1e-3, budget: float = 0.2, init: float = 0.5
    ) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, 1)
        self.num_classes = check_int("num_classes", num_classes, 2)
        self.sparsity = check_float("sparsity", sparsity, 0.0)
        self.budget = check_float("budget", budget, 0.0, 1.0)
        init = check_float("init", init, 0.0, 1.0)
        self.gate = nn.Parameter(torch.full((self.channels, self.num_classes), init))

    def forward(self, features: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Gate ``features`` ``[B, K, ...]`` by each sample's class column of ``G`` (``labels`` ``[B]``),
        or pass them through unchanged when ``labels`` is ``None``.

        Raises:
            ValueError: ``features`` does not have ``K`` channels, or ``labels`` is not ``[B]`` in ``[0, C)``.
        """
        if not isinstance(features, Tensor) or features.ndim < 2 or features.shape[1] != self.channels:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(
                f"ClassSpecificGates: expected features [B, {self.channels}, ...] (channels={self.channels}), but got "
                f"{shape}."
            )
        if labels is None:
            return features
        if labels.shape != (features.shape[0],) or labels.is_floating_point():
            raise ValueError(
                f"ClassSpecificGates: expected integer labels [B] = [{features.shape[0]}], but got shape "
                f"{tuple(labels.shape)} of dtype {labels.dtype}."
            )
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"ClassSpecificGates: expected labels in [0, {self.num_classes}), got {labels.tolist()}.")
        g = self.gate.T[labels]  # [B, K]; kept in [0, 1] by project_() after each step
        return features * g.view(*g.shape, *([1] * (features.ndim - 2))).to(features.dtype)

    def loss_terms(self) -> dict[str, Tensor]:
        """``{"sparsity": lambda_2 * relu(||G||_1 - budget * K * C)}``: zero while the gates' L1 norm is
        within the budget, then linear in it (gradient ``lambda_2 * sign(G)``)."""
        l1 = self.gate.abs().sum()
        return {"sparsity": self.sparsity * torch.relu(l1 - self.budget * self.gate.numel())}

    @torch.no_grad()
    def project_(self) -> None:
        """Divide each filter's row of ``G`` by its maximum over the classes, then clamp onto ``[0, 1]``,
        in place (call after each gated optimiser step). Afterwards every row's maximum is 1; a row
        whose maximum is not positive (closed for every class) becomes all ones, the fixed point of
        the division (the authors' code would divide by zero there). Cost: ``O(K C)``."""
        top = self.gate.amax(dim=1, keepdim=True)
        dead = top <= 0
        self.gate.div_(torch.where(dead, torch.ones_like(top), top)).clamp_(0.0, 1.0)
        self.gate.masked_fill_(dead.expand_as(self.gate), 1.0)

    def assignment(self) -> Tensor:
        """The class each filter serves most: ``argmax_c G[k, c]``, ``[K]``."""
        return self.gate.detach().argmax(dim=1)

    def density(self, threshold: float = 0.1) -> Tensor:
        """Fraction of gates above ``threshold`` (1 - sparsity; 1/C is the one-class-per-filter ideal)."""
        return (self.gate.detach() > threshold).float().mean()

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_classes={self.num_classes}, sparsity={self.sparsity}, budget={self.budget}"
        )
