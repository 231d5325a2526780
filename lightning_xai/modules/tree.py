"""Soft decision tree (Frosst & Hinton 2017, "Distilling a neural network into a soft decision tree").

A complete binary tree of ``depth`` levels. Each inner node ``i`` holds a linear filter
``(w_i, b_i)`` and sends an input right with probability ``p_i(x) = sigmoid(beta * (x . w_i + b_i))``,
where ``beta`` is one learned inverse temperature shared by all nodes. The probability ``P^l(x)``
of reaching leaf ``l`` is the product of the branch probabilities along its path; each leaf holds
a class distribution ``Q^l = softmax(phi^l)``.

Two read-outs:

* the **mixture** ``sum_l P^l(x) Q^l`` (:meth:`SoftDecisionTree.predict_proba`; every row sums to
  one; :meth:`SoftDecisionTree.forward` returns its logarithm, which the rest of the library reads
  as logits), and
* the **maximum-path leaf** ``Q^{argmax_l P^l(x)}`` (:meth:`SoftDecisionTree.predict` with
  ``mode="max_path"``), the paper's interpretable prediction: one path of decisions, one leaf.

Training uses the paper's loss (:meth:`SoftDecisionTree.loss_terms`): the cross-entropy of each
leaf's distribution with the target, weighted by the leaf's path probability (``-sum_l P^l(x)
sum_k T_k log Q^l_k``, which trains every leaf to be pure rather than only their mixture), plus the
balanced-split penalty ``-lambda sum_i 2^-d(i) (0.5 log a_i + 0.5 log(1 - a_i))`` with
``a_i = sum_x P^i(x) p_i(x) / sum_x P^i(x)`` over the batch and ``d(i)`` the node's depth (root 0).

Node and leaf order is breadth first: inner node ``i`` has children ``2i + 1`` and ``2i + 2``
(left, right); leaf ``j`` (``0 <= j < 2**depth``) is reached by the binary digits of ``j`` read
from the most significant one, 0 = left.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int

__all__ = ["MAX_TREE_DEPTH", "SoftDecisionTree"]

MAX_TREE_DEPTH = 12
"""The deepest tree allowed: ``2**12 = 4096`` leaves and 4095 inner filters. Memory grows as
``2**depth``: the forward pass holds ``[B, 2**depth]`` path probabilities and ``[B, 2**depth,
num_classes]`` leaf terms, the filters ``in_features * (2**depth - 1)`` weights."""

_EPS = 1e-8


class SoftDecisionTree(nn.Module):
    """A soft binary decision tree with learned filters, inverse temperature and leaf distributions.

    ``forward`` returns **log-probabilities** ``[B, num_classes]``: the logarithm of the
    path-weighted mixture of the leaves' class distributions, computed stably (log-sum-exp over
    leaves). They serve as logits wherever the library takes scores (explainers, metrics with
    ``softmax=True``: the softmax of log-probabilities is the probabilities themselves), and as the
    log-likelihood in ``F.nll_loss``. :meth:`predict_proba` returns the probabilities (rows sum to
    one). The training loss is :meth:`loss_terms`, which works on log-probabilities internally.

    Args:
        in_features: Length of the (flattened) input vectors.
        num_classes: Number of classes.
        depth: Number of levels of inner nodes, in ``[1, MAX_TREE_DEPTH]`` (``2**depth`` leaves).
        penalty_strength: ``lambda`` of the balanced-split penalty (0 turns it off).
        init_beta: Initial inverse temperature ``beta`` (learned, kept positive as ``exp`` of a
            parameter).

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range (the depth message names the largest allowed).

    Examples:
        >>> tree = SoftDecisionTree(in_features=4, num_classes=3, depth=2)
        >>> x = torch.randn(5, 4)
        >>> bool(torch.allclose(tree.predict_proba(x).sum(dim=1), torch.ones(5)))
        True
        >>> bool(torch.allclose(tree(x).softmax(dim=1), tree.predict_proba(x)))  # forward: log-probabilities
        True
        >>> tree.path_probabilities(x).shape, tree.predict(x).shape
        (torch.Size([5, 4]), torch.Size([5]))
    """

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        depth: int = 4,
        penalty_strength: float = 0.1,
        init_beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.num_classes = check_int("num_classes", num_classes, 2)
        if isinstance(depth, int) and not isinstance(depth, bool) and depth > MAX_TREE_DEPTH:
            raise ValueError(
                f"Expected argument `depth` to be an int in [1, {MAX_TREE_DEPTH}], but got {depth}: a tree of depth "
                f"{depth} has 2**{depth} = {2**depth} leaves, and memory grows as 2**depth (the forward pass holds "
                f"[batch, 2**depth, num_classes] leaf terms). The largest depth allowed is {MAX_TREE_DEPTH}."
            )
        self.depth = check_int("depth", depth, 1, MAX_TREE_DEPTH)
        self.penalty_strength = check_float("penalty_strength", penalty_strength, 0.0)
        init_beta = check_float("init_beta", init_beta, 0.0)
        if init_beta <= 0:
            raise ValueError(f"Expected argument `init_beta` to be > 0, but got {init_beta}.")
        self.num_inner = 2**self.depth - 1
        self.num_leaves = 2**self.depth
        self.inner = nn.Linear(self.in_features, self.num_inner)
        self.log_beta = nn.Parameter(torch.tensor(math.log(init_beta)))
        self.leaf_logits = nn.Parameter(torch.randn(self.num_leaves, self.num_classes) * 0.1)
        # depth of each inner node in breadth-first order (root 0), for the penalty's 2^-d decay
        self.register_buffer(
            "node_depth",
            torch.cat([torch.full((2**d,), float(d)) for d in range(self.depth)]),
            persistent=False,
        )

    # -- the tree -------------------------------------------------------------------------------
    @property
    def beta(self) -> Tensor:
        """The inverse temperature ``beta > 0`` of the inner nodes."""
        return self.log_beta.exp()

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"SoftDecisionTree: expected a Tensor, but got {type(x).__name__}.")
        if x.ndim < 2:
            raise ValueError(f"SoftDecisionTree: expected a batch [B, {self.in_features}], got shape {tuple(x.shape)}.")
        if x.ndim > 2:
            x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"SoftDecisionTree: expected {self.in_features} input features per sample (in_features), but got "
                f"{x.shape[1]} (input shape {tuple(x.shape)})."
            )
        return x

    def node_logits(self, x: Tensor) -> Tensor:
        """``beta * (x . w_i + b_i)`` for every inner node: ``[B, 2**depth - 1]`` (breadth-first order);
        the sigmoid of it is the probability of going right."""
        x = self._check_input(x)
        return self.beta * self.inner(x)

    def _paths(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log P^leaf [B, L], log P^node [B, N], p_right [B, N])``: log path probabilities of the
        leaves and of reaching each inner node, and each node's right-branch probability."""
        z = self.node_logits(x)
        log_right, log_left = F.logsigmoid(z), F.logsigmoid(-z)
        log_reach = z.new_zeros(z.shape[0], 1)
        reach = []
        for d in range(self.depth):
            level = slice(2**d - 1, 2 ** (d + 1) - 1)
            reach.append(log_reach)
            # children of the k-th node of this level sit at 2k (left) and 2k + 1 (right) of the next
            log_reach = torch.stack((log_reach + log_left[:, level], log_reach + log_right[:, level]), dim=2)
            log_reach = log_reach.flatten(1)
        return log_reach, torch.cat(reach, dim=1), torch.sigmoid(z)

    def path_probabilities(self, x: Tensor) -> Tensor:
        """Probability of reaching each leaf: ``[B, 2**depth]``, rows sum to one.

        Args:
            x: ``[B, in_features]`` inputs (any ``[B, ...]`` with that many elements per sample is flattened).
        """
        return self._paths(x)[0].exp()

    def leaf_distributions(self) -> Tensor:
        """Each leaf's class distribution ``softmax(phi^l)``: ``[2**depth, num_classes]``."""
        return self.leaf_logits.softmax(dim=1)

    def log_proba(self, x: Tensor) -> Tensor:
        """``log sum_l P^l(x) Q^l``: the log of :meth:`predict_proba`, computed with log-sum-exp over
        leaves. The same as :meth:`forward`."""
        log_paths = self._paths(x)[0]
        return torch.logsumexp(log_paths.unsqueeze(2) + self.leaf_logits.log_softmax(dim=1).unsqueeze(0), dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Log-probabilities ``[B, num_classes]`` of the mixture of leaf distributions weighted by
        path probability (:meth:`log_proba`): logits for the rest of the library."""
        return self.log_proba(x)

    def predict_proba(self, x: Tensor) -> Tensor:
        """The mixture of leaf distributions weighted by path probability: ``[B, num_classes]``
        probabilities (rows sum to one)."""
        return self.path_probabilities(x) @ self.leaf_distributions()

    def predict(self, x: Tensor, mode: str = "max_path") -> Tensor:
        """Predicted classes ``[B]``.

        Args:
            x: Inputs.
            mode: ``"max_path"``: the argmax of the single leaf with the largest path probability
                (the paper's interpretable read-out); ``"mixture"``: the argmax of :meth:`forward`.
        """
        if mode == "mixture":
            return self.forward(x).argmax(dim=1)
        if mode != "max_path":
            raise ValueError(f"Expected argument `mode` to be 'max_path' or 'mixture', but got {mode!r}.")
        leaf = self.path_probabilities(x).argmax(dim=1)
        return self.leaf_logits.argmax(dim=1)[leaf]

    def max_path_leaf(self, x: Tensor) -> Tensor:
        """Index of the leaf with the largest path probability: ``[B]``."""
        return self.path_probabilities(x).argmax(dim=1)

    # -- losses ---------------------------------------------------------------------------------
    def _targets(self, targets: Tensor, batch: int) -> Tensor:
        if targets.ndim == 1:
            if targets.is_floating_point():
                raise TypeError(f"Expected class indices of an integer dtype, but got {targets.dtype}.")
            if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= self.num_classes):
                raise ValueError(f"Expected class indices in [0, {self.num_classes}), but got {targets.tolist()}.")
            return F.one_hot(targets, self.num_classes).float()
        if targets.ndim != 2 or targets.shape != (batch, self.num_classes):
            raise ValueError(
                f"Expected `targets` as [B] class indices or [B, {self.num_classes}] distributions for a batch of "
                f"{batch}, but got shape {tuple(targets.shape)}."
            )
        return targets

    def loss_terms(self, x: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """The paper's training loss as named terms (add them up to train).

        Args:
            x: ``[B, in_features]`` inputs.
            targets: ``[B]`` class indices (hard labels) or ``[B, num_classes]`` target distributions
                (a teacher's soft targets).

        Returns:
            ``{"classification": -mean_x sum_l P^l(x) sum_k T_k log Q^l_k,
            "balance": -lambda sum_i 2^-d(i) (0.5 log a_i + 0.5 log(1 - a_i))}``; ``a_i`` is the
            batch's path-weighted mean right-branch probability at node ``i``, clamped to
            ``[1e-8, 1 - 1e-8]`` so a dead node costs a large but finite penalty.
        """
        log_paths, log_reach, p_right = self._paths(x)
        t = self._targets(targets, log_paths.shape[0]).to(log_paths.dtype)
        leaf_ce = -(t @ self.leaf_logits.log_softmax(dim=1).T)  # [B, L]: cross-entropy of each leaf
        classification = (log_paths.exp() * leaf_ce).sum(dim=1).mean()
        reach = log_reach.exp()
        alpha = (reach * p_right).sum(dim=0) / reach.sum(dim=0).clamp_min(_EPS)
        alpha = alpha.clamp(_EPS, 1 - _EPS)
        per_node = 0.5 * alpha.log() + 0.5 * (1 - alpha).log()
        balance = -self.penalty_strength * (torch.pow(2.0, -self.node_depth.to(alpha.dtype)) * per_node).sum()
        return {"classification": classification, "balance": balance}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, num_classes={self.num_classes}, depth={self.depth}, "
            f"penalty_strength={self.penalty_strength}"
        )
