"""Influence functions (Koh & Liang 2017): the first-order effect of up-weighting a training
example on a test example's loss, at the trained weights.

``I(z_train, z_test) = -grad L(z_test)^T (H + damping I)^-1 grad L(z_train)``, with ``H`` the
Hessian of the mean training loss w.r.t. the selected parameters. Positive: up-weighting the
training example *raises* the test loss (it is harmful to that prediction); negative: helpful.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import observe
from lightning_xai.errors import LightningXAIError
from lightning_xai.influence._common import (
    DataSource,
    GradientFeatures,
    LossType,
    PerExampleGradients,
    check_data,
    check_layers,
    checked_batches,
    functional_call,
    iter_batches,
    model_state,
    resolve_loss,
    selected_parameters,
    wrap_errors,
)

__all__ = ["InfluenceFunction", "SOLVERS"]

SOLVERS = ("cg", "lissa", "exact")
"""Ways to apply the inverse Hessian: conjugate gradients on exact Hessian-vector products over
the whole Hessian set, LiSSA's stochastic Neumann series (one batch per step), or the explicit
Hessian (``D x D``, for small layers)."""


class InfluenceFunction:
    """Influence functions at the model's current weights.

    Configuration only; the model and the data come at call time, and the model is left exactly
    as it was given (the computation runs in eval mode inside ``observe``, with the weights passed
    functionally). Hessian-vector products differentiate the gradient once more (reverse over
    reverse, through ``torch.func.functional_call``), for all right-hand sides at once.

    Cost: ``cg`` needs one Hessian-vector product over the whole Hessian set per iteration (about
    two forward+backward passes of the set, for all test examples at once); ``lissa`` one
    mini-batch product per step; ``exact`` builds the ``D x D`` Hessian (only for
    ``D <= max_exact_dim``). Then one pass of per-example gradients over the training examples.

    Args:
        loss: A loss name (``"cross_entropy"``, ``"nll"``, ``"mse"``) or a callable returning one
            loss per example.
        layers: ``None`` for every parameter that requires grad, or module names whose parameters
            count (the Hessian is taken over these only).
        damping: ``lambda`` added to the Hessian's diagonal (makes it invertible; needed for
            non-convex networks).
        solver: ``"cg"``, ``"lissa"`` or ``"exact"``.
        max_iter: Conjugate-gradient iterations, or LiSSA recursion depth.
        tol: Conjugate-gradient stopping rule: residual norm <= ``tol`` x right-hand side norm.
        scale: LiSSA's scale; must exceed the largest eigenvalue of ``H + damping I`` for the
            series to converge.
        batch_size: Examples per batch for gradients and Hessian-vector products.
        max_exact_dim: Largest parameter count the ``exact`` solver accepts.

    Examples:
        >>> model = nn.Linear(3, 2)
        >>> x, y = torch.randn(20, 3), torch.arange(20) % 2
        >>> InfluenceFunction(solver="exact").scores(model, x, y, x[:2], y[:2]).shape
        torch.Size([2, 20])
    """

    def __init__(
        self,
        loss: LossType = "cross_entropy",
        layers: Sequence[str] | None = None,
        damping: float = 0.01,
        solver: Literal["cg", "lissa", "exact"] = "cg",
        max_iter: int = 100,
        tol: float = 1e-6,
        scale: float = 10.0,
        batch_size: int = 64,
        max_exact_dim: int = 4096,
    ) -> None:
        self._loss_name, self._loss_fn = resolve_loss(loss)
        self.loss = loss
        self.layers = check_layers(layers)
        self.damping = check_float("damping", damping, 0.0)
        if solver not in SOLVERS:
            raise ValueError(f"Expected argument `solver` to be one of {list(SOLVERS)}, but got {solver!r}.")
        self.solver = solver
        self.max_iter = check_int("max_iter", max_iter, 1)
        self.tol = check_float("tol", tol, 0.0)
        self.scale = check_float("scale", scale, 0.0)
        if self.scale <= 0:
            raise ValueError(f"Expected argument `scale` to be a positive float, but got {scale}.")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.max_exact_dim = check_int("max_exact_dim", max_exact_dim, 1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"

    # -- public API ---------------------------------------------------------------------------
    def scores(
        self,
        model: nn.Module,
        train_inputs: DataSource,
        train_targets: Tensor | None,
        test_inputs: Tensor,
        test_targets: Tensor,
        hessian_inputs: DataSource | None = None,
        hessian_targets: Tensor | None = None,
    ) -> Tensor:
        """``[N_test, N_train]`` influence ``-grad L(z_test)^T (H + damping I)^-1 grad L(z_train)``.

        Args:
            model: The trained network (its current weights are used).
            train_inputs: The training examples to score (a tensor and its
                targets, or a ``Dataset``/``DataLoader`` of ``(x, y)`` and ``None``), streamed.
            train_targets: See ``train_inputs``.
            test_inputs: Test examples and targets (tensors).
            test_targets: See ``test_inputs``.
            hessian_inputs: The examples whose mean loss defines ``H``; default:
                the training examples.
            hessian_targets: See ``hessian_inputs``.

        Returns:
            ``[N_test, N_train]`` scores on the model's device.

        Raises:
            ValueError: an unknown layer, a loss returning a scalar, targets out of range, or too
                many parameters for ``solver="exact"``, before any gradient is computed.
            LightningXAIError: the Hessian is not positive definite along a CG direction (raise
                ``damping``), or LiSSA diverges (raise ``scale``).
        """
        name = type(self).__name__
        if hessian_inputs is None:
            hessian_inputs, hessian_targets = train_inputs, train_targets
        if not isinstance(model, nn.Module):
            raise TypeError(f"{name}: expected `model` to be an nn.Module, but got {type(model).__name__}.")
        for inputs, targets, label in (
            (test_inputs, test_targets, "test_inputs"),
            (train_inputs, train_targets, "train_inputs"),
            (hessian_inputs, hessian_targets, "hessian_inputs"),
        ):
            check_data(inputs, targets, label, name)
        if not isinstance(test_inputs, Tensor):
            raise TypeError(f"{name}: expected `test_inputs` to be a tensor, but got {type(test_inputs).__name__}.")
        names = selected_parameters(model, self.layers, name)
        dim = sum(p.numel() for n, p in model.named_parameters() if n in set(names))
        if self.solver == "exact" and dim > self.max_exact_dim:
            raise ValueError(
                f"{name}: solver='exact' builds a {dim} x {dim} Hessian, more than max_exact_dim={self.max_exact_dim}; "
                "use solver='cg' or 'lissa', or select fewer `layers`."
            )
        layer = self.layers[0] if self.layers is not None and len(self.layers) == 1 else None
        with observe(model) as ctx, wrap_errors(name):
            state = model_state(model)
            grads = PerExampleGradients(model, names, self._loss_fn, ctx, layer=layer)
            hvp = _HessianVectorProducts(model, names, state, self._loss_fn)

            def batches(inputs: DataSource, targets: Tensor | None) -> Iterator[tuple[Tensor, Tensor]]:
                return checked_batches(grads, state, inputs, targets, self.batch_size, self._loss_name, name)

            def hessian_batches() -> Iterator[tuple[Tensor, Tensor]]:  # checked once below, then plain reads
                return iter_batches(hessian_inputs, hessian_targets, self.batch_size, ctx.device, hvp.flat.dtype)

            # every input checked (forward only) before the first gradient
            for inputs, targets in ((hessian_inputs, hessian_targets), (train_inputs, train_targets)):
                next(batches(inputs, targets))
            test = torch.cat([grads.features(state, x, y).flat() for x, y in batches(test_inputs, test_targets)])
            solved = self._solve(hvp, test, hessian_batches, name)
            solved_feats = GradientFeatures(dense=solved)
            blocks = [
                -solved_feats.dot(GradientFeatures(dense=grads.features(state, x, y).flat()))
                for x, y in batches(train_inputs, train_targets)
            ]
        return torch.cat(blocks, dim=1)

    # -- solvers --------------------------------------------------------------------------------
    def _solve(
        self,
        hvp: _HessianVectorProducts,
        rhs: Tensor,
        hessian_batches: Callable[[], Iterator[tuple[Tensor, Tensor]]],
        name: str,
    ) -> Tensor:
        """``(H + damping I)^-1 rhs`` for the rows of ``rhs`` ``[m, D]``."""
        if self.solver == "exact":
            total, count = None, 0
            for x, y in hessian_batches():
                h = hvp.hessian(x, y)
                total = h if total is None else total + h
                count += x.shape[0]
            assert total is not None
            matrix = total / count + self.damping * torch.eye(total.shape[0], device=total.device, dtype=total.dtype)
            return torch.linalg.solve(matrix, rhs.T).T

        def full_product(v: Tensor) -> Tensor:
            total, count = torch.zeros_like(v), 0
            for x, y in hessian_batches():
                total += hvp(v, x, y)
                count += x.shape[0]
            return total / count + self.damping * v

        if self.solver == "cg":
            return _conjugate_gradients(full_product, rhs, self.max_iter, self.tol, name)
        return self._lissa(hvp, rhs, hessian_batches, name)

    def _lissa(
        self,
        hvp: _HessianVectorProducts,
        rhs: Tensor,
        hessian_batches: Callable[[], Iterator[tuple[Tensor, Tensor]]],
        name: str,
    ) -> Tensor:
        """LiSSA (Agarwal et al. 2017): ``h <- v + h - (H_batch h + damping h) / scale`` for
        ``max_iter`` steps over the Hessian set's batches in turn (cycled); the result is
        ``h / scale``."""
        estimate = rhs.clone()
        step = 0
        while step < self.max_iter:
            for x, y in hessian_batches():
                product = hvp(estimate, x, y) / x.shape[0] + self.damping * estimate
                estimate = rhs + estimate - product / self.scale
                step += 1
                if not torch.isfinite(estimate).all():
                    raise LightningXAIError(
                        f"{name}: LiSSA diverged after {step} steps; raise `scale` above the largest eigenvalue "
                        f"of the Hessian (now {self.scale})."
                    )
                if step >= self.max_iter:
                    break
        return estimate / self.scale


class _HessianVectorProducts:
    """Hessian-vector products (and the explicit Hessian) of a batch's summed loss w.r.t. the
    selected parameters, as flat vectors."""

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        state: dict[str, Tensor],
        loss_fn: Callable[[Tensor, Tensor], Tensor],
    ) -> None:
        self.model = model
        self.names = names
        self.shapes = [state[n].shape for n in names]
        self.sizes = [state[n].numel() for n in names]
        self.flat = torch.cat([state[n].reshape(-1) for n in names])
        self.rest = {k: v for k, v in state.items() if k not in set(names)}
        self.loss_fn = loss_fn

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        pieces = torch.split(flat, self.sizes)
        return {n: p.reshape(s) for n, p, s in zip(self.names, pieces, self.shapes)}

    def _loss(self, flat: Tensor, x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(self.model, (self._unflatten(flat), self.rest), (x,))
        return self.loss_fn(out, y).sum()

    def __call__(self, vectors: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """``[m, D]`` products ``H_batch v`` of the batch's *summed* loss Hessian with each row.

        Reverse-over-reverse: the batch's gradient graph is built once, then differentiated along
        all ``m`` vectors at once (``is_grads_batched``).
        """
        flat = self.flat.clone().requires_grad_(True)
        (gradient,) = torch.autograd.grad(self._loss(flat, x, y), flat, create_graph=True)
        (products,) = torch.autograd.grad(gradient, flat, vectors, is_grads_batched=True)
        return products

    def hessian(self, x: Tensor, y: Tensor, block: int = 256) -> Tensor:
        """The ``[D, D]`` Hessian of the batch's summed loss (rows in blocks of ``block``)."""
        eye = torch.eye(self.flat.numel(), device=self.flat.device, dtype=self.flat.dtype)
        return torch.cat([self(eye[i : i + block], x, y) for i in range(0, eye.shape[0], block)])


def _conjugate_gradients(
    product: Callable[[Tensor], Tensor], rhs: Tensor, max_iter: int, tol: float, name: str
) -> Tensor:
    """Solve ``A x = b`` for every row ``b`` of ``rhs`` at once (independent step sizes per row)."""
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    rs = (residual * residual).sum(dim=1)
    target = tol * rhs.norm(dim=1)
    for _ in range(max_iter):
        if bool((rs.sqrt() <= target).all()):
            break
        applied = product(direction)
        curvature = (direction * applied).sum(dim=1)
        active = rs.sqrt() > target
        if bool((curvature[active] <= 0).any()):
            raise LightningXAIError(
                f"{name}: the damped Hessian is not positive definite along a conjugate-gradient direction "
                "(curvature <= 0); raise `damping`."
            )
        alpha = torch.where(active, rs / curvature.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        solution += alpha[:, None] * direction
        residual -= alpha[:, None] * applied
        rs_new = (residual * residual).sum(dim=1)
        beta = torch.where(active, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        direction = residual + beta[:, None] * direction
        rs = rs_new
    else:
        if not bool((rs.sqrt() <= target).all()):
            worst = float((rs.sqrt() / rhs.norm(dim=1).clamp_min(1e-30)).max())
            warnings.warn(
                f"{name}: conjugate gradients stopped after {max_iter} iterations with relative residual {worst:.2e} "
                f"(tol {tol}); raise `max_iter` or `damping`.",
                stacklevel=3,
            )
    return solution
