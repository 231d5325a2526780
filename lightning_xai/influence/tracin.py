"""TracIn (Pruthi et al. 2020): the influence of a training example on a test example, traced
over checkpoints saved during training.

``TracIn(z, z') = sum_c lr_c * <grad L(w_c, z), grad L(w_c, z')>`` over checkpoints ``c`` with
learning rates ``lr_c``; the self-influence ``TracIn(z, z) = sum_c lr_c * |grad L(w_c, z)|^2``
ranks training examples that are hard or mislabelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import OutputType, check_output, observe
from lightning_xai.influence._common import (
    Checkpoint,
    DataSource,
    GradientFeatures,
    LossType,
    PerExampleGradients,
    check_checkpoints,
    check_data,
    check_layers,
    check_targets,
    checked_batches,
    load_checkpoint,
    model_state,
    resolve_loss,
    selected_parameters,
    wrap_errors,
)

__all__ = ["TopK", "TracIn"]


class TopK(NamedTuple):
    """The ``k`` most (or least) influential training examples of each test example."""

    indices: Tensor
    """``[N_test, k]`` training-set indices (reading order), best first."""
    scores: Tensor
    """``[N_test, k]`` their TracIn scores."""


class TracIn:
    """TracIn influence of training examples, from checkpoints saved during training.

    Configuration only; the model, the checkpoints and the data come at call time. The model is
    left exactly as it was given (modes, ``requires_grad``, ``.grad``, weights, BatchNorm
    statistics, RNG): checkpoints are applied functionally with ``torch.func.functional_call``,
    in eval mode.

    Per-example gradients come from ``torch.func`` (``vmap(grad(loss))``) for any layer type; when
    ``layers`` names one ``nn.Linear``, the exact last-layer form is used (the gradient of a linear
    layer is the outer product of its output gradient and its input, so dot products factor and
    one batched forward + a backward to that layer's output suffice).

    Cost per checkpoint: one pass of per-example gradients over the examples (``vmap``), or one
    batched forward for the last-layer form. Memory: one batch of gradients (``batch_size x D``)
    plus, for :meth:`scores` and :meth:`proponents`, the test examples' gradients at every
    checkpoint (``checkpoints x N_test x D``; ``D = projection_dim`` with a projection). The
    training data are streamed; every checkpoint's weights are held during a call.

    Args:
        loss: ``"cross_entropy"``, ``"nll"``, ``"mse"`` or a callable ``loss(outputs, targets) ->
            [B]`` returning one (unreduced) loss per example.
        layers: ``None`` for every parameter that requires grad, or dotted module names whose
            parameters (all of them, recursively) count.
        projection_dim: Project every gradient to this many dimensions with a seeded count
            sketch (TensorSketch on ``nn.Linear`` layers, whose factors are projected separately),
            the same for training and test examples: scores become unbiased estimates of the
            exact ones; keeps 4 bytes per parameter, never a ``D x projection_dim`` matrix.
        batch_size: Examples per ``vmap`` call (and per batch when reading a ``Dataset``).
        seed: Seed of the random projection.
        output: How to pick the ``[B, C]`` scores the loss reads when the model returns a tuple,
            dict or dataclass (see :func:`~lightning_xai.attribution.base.select_output`).

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 3))
        >>> ckpts = [(model.state_dict(), 0.1)]
        >>> x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
        >>> TracIn().self_influence(model, ckpts, x, y).shape
        torch.Size([6])
    """

    def __init__(
        self,
        loss: LossType = "cross_entropy",
        layers: Sequence[str] | None = None,
        projection_dim: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        output: OutputType = None,
    ) -> None:
        self.output = check_output(output)
        self._loss_name, self._loss_fn = resolve_loss(loss)
        self.loss = loss
        self.layers = check_layers(layers)
        self.projection_dim = check_int("projection_dim", projection_dim, 1, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    # -- public API ---------------------------------------------------------------------------
    def self_influence(
        self,
        model: nn.Module,
        checkpoints: Sequence[Checkpoint],
        inputs: DataSource,
        targets: Tensor | None = None,
    ) -> Tensor:
        """``sum_c lr_c * |grad L(w_c, z)|^2`` for every example ``z``.

        Args:
            model: The network (any ``nn.Module``); its own weights are not used.
            checkpoints: ``(state_dict or path, learning_rate)`` pairs.
            inputs: A ``[N, ...]`` tensor, or a ``Dataset``/``DataLoader`` yielding ``(x, y)``
                (read in order, streamed).
            targets: ``[N]`` targets for a tensor ``inputs``; ``None`` for a dataset.

        Returns:
            ``[N]`` self-influence scores, on the model's device.

        Raises:
            ValueError: empty ``checkpoints``, a non-positive learning rate, an unknown layer, a
                loss returning one value for the whole batch, targets out of range -- all before
                any gradient is computed.
        """
        parts: list[Tensor] = []
        with self._session(model, checkpoints) as (grads, states, rates):
            check_data(inputs, targets, "inputs", type(self).__name__)
            for x, y in self._checked_batches(grads, states[0], inputs, targets):
                total = torch.zeros(x.shape[0], device=x.device, dtype=torch.float32)
                for state, lr in zip(states, rates):
                    total += lr * grads.features(state, x, y).sq_norms().float()
                parts.append(total)
        return torch.cat(parts)

    def scores(
        self,
        model: nn.Module,
        checkpoints: Sequence[Checkpoint],
        train_inputs: DataSource,
        train_targets: Tensor | None,
        test_inputs: Tensor,
        test_targets: Tensor,
    ) -> Tensor:
        """``[N_test, N_train]`` TracIn scores ``sum_c lr_c * <grad L(w_c, z_train), grad L(w_c, z_test)>``.

        Args:
            model: As in :meth:`self_influence`.
            checkpoints: As in :meth:`self_influence`.
            train_inputs: Training examples (a tensor and its targets, or a
                ``Dataset``/``DataLoader`` and ``None``), streamed.
            train_targets: See ``train_inputs``.
            test_inputs: Test examples and their targets (tensors).
            test_targets: See ``test_inputs``.

        Returns:
            ``[N_test, N_train]`` scores on the model's device (training examples in reading order).
        """
        blocks = [
            block
            for _, block in self._blocks(model, checkpoints, train_inputs, train_targets, test_inputs, test_targets)
        ]
        return torch.cat(blocks, dim=1)

    def proponents(
        self,
        model: nn.Module,
        checkpoints: Sequence[Checkpoint],
        train_inputs: DataSource,
        train_targets: Tensor | None,
        test_inputs: Tensor,
        test_targets: Tensor,
        k: int = 5,
    ) -> TopK:
        """The ``k`` training examples with the highest TracIn score for each test example.

        Streamed: only a running top-``k`` per test example is kept, never the whole score matrix.
        Fewer than ``k`` columns come back when there are fewer training examples.
        """
        return self._top(model, checkpoints, train_inputs, train_targets, test_inputs, test_targets, k, largest=True)

    def opponents(
        self,
        model: nn.Module,
        checkpoints: Sequence[Checkpoint],
        train_inputs: DataSource,
        train_targets: Tensor | None,
        test_inputs: Tensor,
        test_targets: Tensor,
        k: int = 5,
    ) -> TopK:
        """The ``k`` training examples with the lowest (most negative) TracIn score for each test
        example, lowest first. Streamed like :meth:`proponents`."""
        return self._top(model, checkpoints, train_inputs, train_targets, test_inputs, test_targets, k, largest=False)

    def update(
        self,
        model: nn.Module,
        learning_rate: float,
        batches: Iterable[tuple[Tensor, Tensor, Tensor]],
        self_influence: Tensor | None = None,
        test_inputs: Tensor | None = None,
        test_targets: Tensor | None = None,
        scores: Tensor | None = None,
    ) -> int:
        """Add one checkpoint -- the model's *current* weights with ``learning_rate`` -- to running
        TracIn sums, in place: the online form a training callback uses (no checkpoint is saved or
        reloaded).

        ``self_influence[i] += lr * |g_i|^2`` and ``scores[:, i] += lr * <g_test, g_i>`` for every
        training example ``i`` that ``batches`` yields. After the checkpoints ``c = 1..C`` have
        been added, the sums equal :meth:`self_influence` and :meth:`scores` over the same
        checkpoints.

        Args:
            model: The network at the checkpoint (its current weights are used; left as given).
            learning_rate: The learning rate in effect at this checkpoint (> 0).
            batches: ``(indices [b], inputs [b, ...], targets [b])`` triples; ``indices`` index
                the accumulators.
            self_influence: ``[N]`` accumulator, or ``None``.
            test_inputs: Test examples for ``scores`` (tensors), or ``None``.
            test_targets: See ``test_inputs``.
            scores: ``[N_test, N]`` accumulator, or ``None``.

        Returns:
            The number of training examples read.

        Raises:
            ValueError: a non-positive learning rate, a test set without a ``scores``
                accumulator (or the reverse), or the bad input :meth:`self_influence` rejects.
        """
        name = type(self).__name__
        lr = check_float("learning_rate", learning_rate)
        if lr <= 0:
            raise ValueError(f"{name}: expected a positive learning rate, but got {lr}.")
        if (scores is None) != (test_inputs is None):
            raise ValueError(f"{name}: pass `scores` together with `test_inputs` (or neither).")
        if test_inputs is not None:
            check_data(test_inputs, test_targets, "test_inputs", name)
        with self._session(model, [(model_state(model), lr)]) as (grads, states, _):
            state = states[0]
            test_feats = None
            if test_inputs is not None:
                test_feats = _concat(
                    [
                        grads.features(state, x, y)
                        for x, y in self._checked_batches(grads, state, test_inputs, test_targets)
                    ]
                )
            count = 0
            classes = None
            for i, (indices, x, y) in enumerate(batches):
                x = x.detach().to(grads.ctx.device)
                y = y.detach().to(grads.ctx.device)
                if i == 0:
                    classes = grads.check_batch(state, x, y, self._loss_name, name)
                else:
                    check_targets(y, classes, self._loss_name, name)
                for start in range(0, x.shape[0], self.batch_size):
                    xb, yb = x[start : start + self.batch_size], y[start : start + self.batch_size]
                    ib = indices[start : start + self.batch_size]
                    feats = grads.features(state, xb, yb)
                    if self_influence is not None:
                        self_influence.index_add_(
                            0, ib.to(self_influence.device), (lr * feats.sq_norms()).to(self_influence)
                        )
                    if scores is not None and test_feats is not None:
                        scores.index_add_(1, ib.to(scores.device), (lr * test_feats.dot(feats)).to(scores))
                count += x.shape[0]
        return count

    # -- internals ------------------------------------------------------------------------------
    def _top(
        self,
        model: nn.Module,
        checkpoints: Sequence[Checkpoint],
        train_inputs: DataSource,
        train_targets: Tensor | None,
        test_inputs: Tensor,
        test_targets: Tensor,
        k: int,
        largest: bool,
    ) -> TopK:
        k = check_int("k", k, 1)
        best_scores: Tensor | None = None
        best_index: Tensor | None = None
        for offset, block in self._blocks(model, checkpoints, train_inputs, train_targets, test_inputs, test_targets):
            index = torch.arange(offset, offset + block.shape[1], device=block.device).expand_as(block)
            if best_scores is not None:
                block = torch.cat([best_scores, block], dim=1)
                index = torch.cat([best_index, index], dim=1)  # type: ignore[list-item]
            top = torch.topk(block, min(k, block.shape[1]), dim=1, largest=largest, sorted=True)
            best_scores, best_index = top.values, index.gather(1, top.indices)
        assert best_scores is not None and best_index is not None
        return TopK(best_index, best_scores)

    def _blocks(
        self,
        model: nn.Module,
        checkpoints: Sequence[Checkpoint],
        train_inputs: DataSource,
        train_targets: Tensor | None,
        test_inputs: Tensor,
        test_targets: Tensor,
    ) -> Iterator[tuple[int, Tensor]]:
        """``(offset, [N_test, b] scores)`` per training batch, summed over checkpoints."""
        name = type(self).__name__
        with self._session(model, checkpoints) as (grads, states, rates):
            check_data(test_inputs, test_targets, "test_inputs", name)
            if not isinstance(test_inputs, Tensor):
                raise TypeError(f"{name}: expected `test_inputs` to be a tensor, but got {type(test_inputs).__name__}.")
            check_data(train_inputs, train_targets, "train_inputs", name)
            test: list[list[GradientFeatures]] = [[] for _ in states]
            for x, y in self._checked_batches(grads, states[0], test_inputs, test_targets):
                for c, state in enumerate(states):
                    test[c].append(grads.features(state, x, y))
            test_feats = [_concat(parts) for parts in test]
            offset = 0
            for x, y in self._checked_batches(grads, states[0], train_inputs, train_targets):
                block = None
                for state, lr, feats in zip(states, rates, test_feats):
                    contribution = lr * feats.dot(grads.features(state, x, y)).float()
                    block = contribution if block is None else block + contribution
                assert block is not None
                yield offset, block
                offset += x.shape[0]

    def _checked_batches(
        self, grads: PerExampleGradients, state: dict[str, Tensor], inputs: DataSource, targets: Tensor | None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The batches of ``inputs``, each checked (model output, loss shape, target range) before
        its gradients; a tensor's targets are all checked before the first gradient."""
        return checked_batches(grads, state, inputs, targets, self.batch_size, self._loss_name, type(self).__name__)

    @contextmanager
    def _session(
        self, model: nn.Module, checkpoints: Sequence[Checkpoint]
    ) -> Iterator[tuple[PerExampleGradients, list[dict[str, Tensor]], list[float]]]:
        """Validate, enter :func:`observe`, load the checkpoints and build the gradient function."""
        name = type(self).__name__
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name}: expected `model` to be an nn.Module, but got {type(model).__name__}.")
        pairs = check_checkpoints(checkpoints, name)
        names = selected_parameters(model, self.layers, name)
        layer = self.layers[0] if self.layers is not None and len(self.layers) == 1 else None
        with observe(model, output=self.output) as ctx:
            states = [load_checkpoint(source, model, ctx.device, name, i) for i, (source, _) in enumerate(pairs)]
            grads = PerExampleGradients(
                model, names, self._loss_fn, ctx, projection_dim=self.projection_dim, seed=self.seed, layer=layer
            )
            with wrap_errors(name):
                yield grads, states, [lr for _, lr in pairs]


def _concat(parts: list[GradientFeatures]) -> GradientFeatures:
    if parts[0].dense is not None:
        return GradientFeatures(dense=torch.cat([p.dense for p in parts]))  # type: ignore[misc]
    return GradientFeatures(
        delta=torch.cat([p.delta for p in parts]),  # type: ignore[misc]
        act=torch.cat([p.act for p in parts]),  # type: ignore[misc]
    )
