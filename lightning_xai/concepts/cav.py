"""Concept activation vectors (Kim et al. 2018): a linear direction at a layer that separates a
concept's examples from random ones.

The classifier is trained in torch, full batch, on the activations' device: an L2-regularised
logistic regression (or a linear SVM with the squared hinge loss), see :func:`fit_linear`, so the
result depends on the data and the seed of the train/test split only. Many CAVs of one layer are
trained as batched problems (their losses are independent, so the sum's minimum is each one's
minimum), chunked so that memory grows with one problem's size (``N`` examples x ``D``
activations), never with the total number of examples: Newton's method on each problem's
``N x N`` Gram matrix when ``N`` is small, L-BFGS on the ``D`` weights otherwise.

Before fitting, each problem's activations are centred and divided by one scalar (their RMS
norm). Neither changes the direction of the separating hyperplane's normal in the original
activation space, which is what :attr:`CAV.vector` is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.concepts.examples import ExampleSource, load_examples
from lightning_xai.concepts.functional import layer_activations

__all__ = [
    "CAV",
    "CLASSIFIERS",
    "SOLVERS",
    "MIN_EXAMPLES",
    "fit_linear",
    "solve_linear",
    "choose_solver",
    "split_indices",
    "check_classifier",
]

CLASSIFIERS: tuple[str, ...] = ("logistic", "svm")
"""The linear classifiers a CAV can be trained with."""

SOLVERS: tuple[str, ...] = ("auto", "dual", "primal")
"""How :func:`fit_linear` solves: Newton on the representer coefficients, L-BFGS on the weights,
or whichever is cheaper for the problems' shape."""

DUAL_MAX_EXAMPLES = 2048
"""``"auto"`` uses the dual solver up to this many examples per problem (its ``N x N`` matrices)."""

CHUNK_BYTES = 256 * 2**20
"""Working memory of one chunk of problems in :func:`fit_linear` and :func:`fit_cavs`."""

_D_CHUNK = 4096
"""Feature columns converted to float64 at once by the dual solver."""

MIN_EXAMPLES = 4
"""The fewest examples a concept or random set may have: with a held-out split, at least one
example of each set is tested and at least two are trained on."""


def check_classifier(classifier: object) -> Literal["logistic", "svm"]:
    """Return ``classifier`` if it is one of :data:`CLASSIFIERS`.

    Raises:
        ValueError: it is not.
    """
    if classifier not in CLASSIFIERS:
        raise ValueError(f"Expected argument `classifier` to be one of {list(CLASSIFIERS)}, but got {classifier!r}.")
    return classifier  # type: ignore[return-value]


def check_set_size(n: int, name: str, method: str = "CAV") -> None:
    """Raise ``ValueError`` when an example set is smaller than :data:`MIN_EXAMPLES`."""
    if n < MIN_EXAMPLES:
        raise ValueError(
            f"{method}: the set {name!r} has {n} examples; at least {MIN_EXAMPLES} are needed to fit a CAV."
        )


def split_indices(n: int, test_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A seeded ``(train, test)`` split of ``range(n)``: ``round(test_fraction * n)`` test indices,
    at least one when ``test_fraction > 0``, and at least two training indices."""
    order = torch.randperm(n, generator=generator)
    n_test = 0 if test_fraction <= 0.0 else min(max(1, round(test_fraction * n)), n - 2)
    return order[n_test:], order[:n_test]


def fit_linear(
    features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    classifier: str = "logistic",
    regularization: float = 0.01,
    max_iter: int = 50,
    solver: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Fit ``K`` independent linear binary classifiers at once, full batch, deterministically.

    Problem ``k`` minimises ``sum_i c_ki * loss(y_ki * (v_k . x'_ki + b_k)) + reg / 2 * (|v_k|^2 + b_k^2)``
    over its samples, where ``c_ki`` are the sample weights normalised to sum to 1 (0 marks padding
    and held-out samples), ``x'`` are the problem's centred features divided by their RMS norm
    (neither changes the direction of the normal in the original space), ``y`` is +1/-1 and
    ``loss`` is ``log(1 + exp(-m))`` (logistic regression) or ``max(0, 1 - m)^2`` (linear SVM with
    the squared hinge loss). The bias is an extra constant feature, regularised like the weights.
    The objective is strongly convex, so both solvers reach the same minimiser:

    * ``"dual"``: by the representer theorem ``v = sum_i alpha_i x'_i``; Newton's method with a
      backtracking line search on the ``N`` coefficients, with each problem's ``N x N`` float64
      Gram matrix. Cost ``N^2 D`` for the Gram matrix and ``N^3`` per Newton step; memory
      ``O(N^2)`` per problem.
    * ``"primal"``: L-BFGS (``torch.optim.LBFGS``, strong Wolfe line search) on the ``D + 1``
      weights of every problem, with the analytic gradient. Cost ``O(N D)`` per iteration; memory
      a float64 copy of the problem's ``N x D`` features.
    * ``"auto"``: the dual when ``N <= min(D, DUAL_MAX_EXAMPLES)`` (fewer examples than
      activations, as for CAVs at a convolutional layer), the primal otherwise.

    The problems are solved in chunks of at most :data:`CHUNK_BYTES` of working memory.

    Args:
        features: ``[K, N, D]`` features.
        labels: ``[K, N]``, 1 for the positive class (the concept), 0 for the negative.
        weights: ``[K, N]`` sample weights, 0 for padding and held-out samples.
        classifier: ``"logistic"`` or ``"svm"``.
        regularization: L2 strength on the scaled features, > 0.
        max_iter: Newton iterations at most (the primal solver runs at most 20 times as many
            L-BFGS iterations).
        solver: ``"auto"``, ``"dual"`` or ``"primal"``.

    Returns:
        ``(normal [K, D], bias [K])`` in the original feature space: ``x . normal + bias > 0`` is
        the positive side.
    """
    normal, bias, _ = solve_linear(
        features,
        labels,
        weights,
        classifier=classifier,
        regularization=regularization,
        max_iter=max_iter,
        solver=solver,
    )
    return normal.to(features.dtype), bias.to(features.dtype)


def choose_solver(n: int, d: int, solver: str = "auto") -> str:
    """The solver :func:`fit_linear` uses for problems of ``n`` examples of dimension ``d``."""
    if solver not in SOLVERS:
        raise ValueError(f"Expected argument `solver` to be one of {list(SOLVERS)}, but got {solver!r}.")
    if solver != "auto":
        return solver
    return "dual" if n <= min(d, DUAL_MAX_EXAMPLES) else "primal"


def _chunk_size(n: int, d: int, solver: str) -> int:
    """Problems per chunk so that one chunk's working memory stays within :data:`CHUNK_BYTES`."""
    if solver == "dual":
        per_problem = 8 * (4 * n * n + n * min(d, _D_CHUNK))  # Gram, kernel, Newton system, solve; a D chunk
    else:
        per_problem = 8 * (2 * n * d + 8 * n)  # float64 features (and the gradient's product)
    return max(1, CHUNK_BYTES // max(per_problem, 1))


def solve_linear(
    features: Tensor,
    labels: Tensor,
    weights: Tensor,
    *,
    classifier: str = "logistic",
    regularization: float = 0.01,
    max_iter: int = 50,
    solver: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`fit_linear`, also returning the decision function ``x . normal + bias`` of every
    sample (held-out ones included), all in float64: ``(normal [K, D], bias [K], decision [K, N])``."""
    classifier = check_classifier(classifier)
    k, n, d = features.shape
    solver = choose_solver(n, d, solver)
    reg = max(float(regularization), 1e-8)
    device = features.device
    w = weights.detach().to(device=device, dtype=torch.float64)
    y = labels.detach().to(device=device, dtype=torch.float64) * 2.0 - 1.0
    step = _chunk_size(n, d, solver)
    parts = []
    with torch.inference_mode(False), torch.no_grad():
        for start in range(0, k, step):
            sl = slice(start, start + step)
            x = features[sl].detach()
            if x.is_inference():
                x = x.clone()
            wk, yk = w[sl].clone(), y[sl].clone()
            solve = _solve_dual if solver == "dual" else _solve_primal
            parts.append(solve(x, yk, wk, classifier, reg, max_iter))
    normal, bias, decision = (torch.cat(p) for p in zip(*parts))
    return normal, bias, decision


def _gram(x: Tensor) -> Tensor:
    """``[k, N, N]`` float64 Gram matrices of ``[k, N, D]`` features, accumulated over chunks of
    :data:`_D_CHUNK` columns (only one chunk is ever converted to float64)."""
    k, n, d = x.shape
    gram = torch.zeros(k, n, n, dtype=torch.float64, device=x.device)
    for j in range(0, d, _D_CHUNK):
        part = x[:, :, j : j + _D_CHUNK].double()
        gram.baddbmm_(part, part.transpose(1, 2))
    return gram


def _combine(coef: Tensor, x: Tensor) -> Tensor:
    """float64 ``sum_i coef_ki x_ki`` over chunks of columns: ``coef [k, N]``, ``x [k, N, D]`` give
    ``[k, D]``; ``coef [1, K, N]``, ``x [1, N, D]`` give ``[1, K, D]`` (one set of rows for all)."""
    d = x.shape[-1]
    out = torch.empty(*coef.shape[:-1], d, dtype=torch.float64, device=x.device)
    c = coef.unsqueeze(1) if coef.ndim == 2 else coef
    for j in range(0, d, _D_CHUNK):
        part = torch.bmm(c, x[:, :, j : j + _D_CHUNK].double())
        out[..., j : j + _D_CHUNK] = part.squeeze(1) if coef.ndim == 2 else part
    return out


def _solve_dual(
    x: Tensor, y: Tensor, w: Tensor, classifier: str, reg: float, max_iter: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Newton's method on the representer coefficients, per-problem Gram matrices."""
    coef, mean_coef, bias_part, decision = _dual_from_gram(_gram(x), y, w, classifier, reg, max_iter)
    normal = _combine(coef, x)
    bias = bias_part - (normal * _combine(mean_coef, x)).sum(1)
    return normal, bias, decision


def _dual_from_gram(
    gram: Tensor, y: Tensor, w: Tensor, classifier: str, reg: float, max_iter: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The dual solve on ``[k, N, N]`` float64 Gram matrices (overwritten).

    Returns:
        ``(coef, mean_coef, bias_part, decision)``: ``normal = sum_i coef_i x_i``, the weighted
        mean ``mu = sum_i mean_coef_i x_i``, ``bias = bias_part - normal . mu``; ``decision [k, N]``.
    """
    total = w.sum(1, keepdim=True).clamp(min=1e-12)  # [k, 1]
    # centre and scale in the Gram matrix: x' = (x - mu) / s, mu = sum_i w_i x_i / W
    gw = torch.bmm(gram, w.unsqueeze(-1)).squeeze(-1) / total  # [k, N]: x_j . mu
    mm = (gw * w).sum(1, keepdim=True) / total  # [k, 1]: mu . mu
    kernel = gram.sub_(gw.unsqueeze(2)).sub_(gw.unsqueeze(1)).add_(mm.unsqueeze(2))  # centred, in place
    scale2 = ((torch.diagonal(kernel, dim1=1, dim2=2) * w).sum(1, keepdim=True) / total).clamp(min=1e-24)  # s^2
    kernel.div_(scale2.unsqueeze(2)).add_(1.0)  # + 1: the bias feature
    alpha = _newton(kernel, y, w / total, classifier, reg, max_iter)
    decision = torch.bmm(kernel, alpha.unsqueeze(-1)).squeeze(-1)
    # normal = sum_i alpha_i (x_i - mu) / s^2, bias = sum_i alpha_i - normal . mu
    coef = alpha / scale2 - (alpha.sum(1, keepdim=True) / scale2) * (w / total)  # [k, N]
    return coef, w / total, alpha.sum(1), decision


def _solve_primal(
    x: Tensor, y: Tensor, w: Tensor, classifier: str, reg: float, max_iter: int
) -> tuple[Tensor, Tensor, Tensor]:
    """L-BFGS on the weights ``[k, D + 1]`` of the scaled problems, analytic gradient."""
    xd = x.double()  # [k, N, D]
    c = w / w.sum(1, keepdim=True).clamp(min=1e-12)  # [k, N]
    mu = torch.bmm(c.unsqueeze(1), xd).squeeze(1)  # [k, D]
    xmu = torch.bmm(xd, mu.unsqueeze(-1)).squeeze(-1)  # [k, N]: x_i . mu
    sq = xd.square().sum(-1)  # [k, N]
    scale = ((c * (sq - 2.0 * xmu)).sum(1) + mu.square().sum(1)).clamp(min=1e-24).sqrt()  # [k]: RMS norm
    k, _, d = xd.shape
    params = torch.zeros(k, d + 1, dtype=torch.float64, device=x.device, requires_grad=True)

    def margins(p: Tensor) -> Tensor:
        v, b = p[:, :d], p[:, d]
        f = (torch.bmm(xd, v.unsqueeze(-1)).squeeze(-1) - (mu * v).sum(1, keepdim=True)) / scale.unsqueeze(1)
        return f + b.unsqueeze(1)

    def closure() -> Tensor:
        p = params.detach()
        f = margins(p)
        loss, d1, _ = _loss_terms(y * f, classifier)
        u = c * y * d1  # d objective / d f
        value = (c * loss).sum() + 0.5 * reg * p.square().sum()
        grad_v = (torch.bmm(u.unsqueeze(1), xd).squeeze(1) - u.sum(1, keepdim=True) * mu) / scale.unsqueeze(1)
        params.grad = torch.cat([grad_v, u.sum(1, keepdim=True)], dim=1) + reg * p
        return value

    optimizer = torch.optim.LBFGS(
        [params],
        lr=1.0,
        max_iter=20 * max_iter,
        max_eval=25 * max_iter,
        tolerance_grad=1e-11,
        tolerance_change=1e-16,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    optimizer.step(closure)
    p = params.detach()
    decision = margins(p)
    normal = p[:, :d] / scale.unsqueeze(1)
    bias = p[:, d] - (normal * mu).sum(1)
    return normal, bias, decision


def _loss_terms(margin: Tensor, classifier: str) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, d loss / d m, d2 loss / d m2)`` of the margins."""
    if classifier == "logistic":
        p = torch.sigmoid(-margin)
        return torch.nn.functional.softplus(-margin), -p, p * (1.0 - p)
    gap = (1.0 - margin).clamp(min=0.0)
    return gap.square(), -2.0 * gap, 2.0 * (gap > 0).to(margin.dtype)


def _objective(gram: Tensor, alpha: Tensor, y: Tensor, c: Tensor, classifier: str, reg: float) -> Tensor:
    f = torch.einsum("knm,...km->...kn", gram, alpha)
    loss, _, _ = _loss_terms(y * f, classifier)
    return (c * loss).sum(-1) + 0.5 * reg * (alpha * f).sum(-1)


def _newton(gram: Tensor, y: Tensor, c: Tensor, classifier: str, reg: float, max_iter: int) -> Tensor:
    """Minimise the kernelised objective of :func:`fit_linear` over ``alpha`` ``[K, N]``."""
    k, n, _ = gram.shape
    alpha = torch.zeros(k, n, dtype=gram.dtype, device=gram.device)
    eye = torch.eye(n, dtype=gram.dtype, device=gram.device)
    steps = 0.5 ** torch.arange(12, dtype=gram.dtype, device=gram.device)  # line search candidates
    value = _objective(gram, alpha, y, c, classifier, reg)
    for _ in range(max_iter):
        f = torch.bmm(gram, alpha.unsqueeze(-1)).squeeze(-1)
        _, d1, d2 = _loss_terms(y * f, classifier)
        u = c * y * d1  # d loss / d f
        h = c * d2  # d2 loss / d f2 (y^2 = 1)
        # Newton step: (K D K + reg K) delta = -K (u + reg alpha)  <=  (D K + reg I) delta = -(u + reg alpha)
        system = h.unsqueeze(-1) * gram + reg * eye
        # one solve per problem: batched torch.linalg.solve fails on some of these systems with 2+
        # CPU threads (MKL: "Parameter 6 was incorrect on entry to DLASWP"; torch 2.14, seen on
        # Fashion-MNIST CAVs), while each 2-D solve succeeds
        rhs = -(u + reg * alpha)
        delta = torch.stack([torch.linalg.solve(system[i], rhs[i]) for i in range(k)])
        # grad . delta (the directional derivative) for the Armijo condition
        slope = (torch.bmm(gram, (u + reg * alpha).unsqueeze(-1)).squeeze(-1) * delta).sum(-1)
        trial = alpha.unsqueeze(0) + steps.view(-1, 1, 1) * delta.unsqueeze(0)  # [S, K, N]
        values = _objective(gram, trial, y, c, classifier, reg)  # [S, K]
        ok = values <= value.unsqueeze(0) + 1e-4 * steps.view(-1, 1) * slope.unsqueeze(0)
        first = torch.where(
            ok.any(0), ok.to(torch.int8).argmax(0), torch.full_like(value, len(steps) - 1, dtype=torch.long)
        )
        step = steps[first]
        alpha = alpha + step.unsqueeze(1) * delta
        value = values.gather(0, first.view(1, -1)).squeeze(0)
        if float((step * slope).abs().max()) < 1e-12:
            break
    return alpha


def fit_cavs(
    acts: Tensor,
    pairs: list[tuple[Tensor, Tensor]],
    splits: list[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]],
    *,
    classifier: str,
    regularization: float,
    max_iter: int = 50,
    solver: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Fit one CAV per (positive, negative) pair of example sets with :func:`fit_linear`.

    Each problem's rows are gathered from ``acts`` a chunk of problems at a time (at most
    :data:`CHUNK_BYTES` of features), so memory grows with the largest problem, never with the
    total number of rows ``M`` (no ``M x M`` matrix is formed).

    Args:
        acts: ``[M, D]`` activations of every example of every set.
        pairs: ``K`` pairs of row-index tensors into ``acts``: the positive (concept) set's rows and
            the negative (random) set's rows.
        splits: For each pair, ``((pos_train, pos_test), (neg_train, neg_test))`` positions within
            the two sets.
        classifier: ``"logistic"`` or ``"svm"``.
        regularization: L2 strength.
        max_iter: Newton iterations at most (see :func:`fit_linear`).
        solver: ``"auto"``, ``"dual"`` or ``"primal"`` (see :func:`fit_linear`).

    Returns:
        ``(unit vectors [K, D], biases [K] of the unit-normal hyperplanes, held-out accuracies [K])``;
        the accuracy is measured on the training examples when a split has no test examples.
    """
    k = len(pairs)
    n = max(int(p.numel() + q.numel()) for p, q in pairs)
    d = acts.shape[1]
    device = acts.device
    rows = torch.zeros(k, n, dtype=torch.long, device=device)
    labels = torch.zeros(k, n, device=device)
    train = torch.zeros(k, n, device=device)
    test = torch.zeros(k, n, device=device)
    for i, ((pos, neg), ((pos_tr, pos_te), (neg_tr, neg_te))) in enumerate(zip(pairs, splits)):
        p = pos.numel()
        rows[i, :p] = pos.to(device)
        rows[i, p : p + neg.numel()] = neg.to(device)
        labels[i, :p] = 1.0
        train[i, pos_tr.to(device)] = 1.0
        train[i, p + neg_tr.to(device)] = 1.0
        test[i, pos_te.to(device)] = 1.0
        test[i, p + neg_te.to(device)] = 1.0
    chosen = choose_solver(n, d, solver)
    m = acts.shape[0]
    if chosen == "dual" and 8 * (m * m + m * min(d, _D_CHUNK)) <= CHUNK_BYTES:
        # few rows in all: one Gram matrix shared by every problem (rows shared between problems
        # are multiplied once), solved in chunks of problems
        normal, bias, decision = _fit_shared_gram(acts, rows, labels, train, classifier, regularization, max_iter)
        return _unit_cavs(normal, bias, decision, labels, train, test, acts.dtype)
    step = max(1, min(_chunk_size(n, d, chosen), CHUNK_BYTES // max(1, n * d * acts.element_size())))
    parts = []
    for start in range(0, k, step):
        sl = slice(start, start + step)
        parts.append(
            solve_linear(
                acts[rows[sl]],
                labels[sl],
                train[sl],
                classifier=classifier,
                regularization=regularization,
                max_iter=max_iter,
                solver=chosen,
            )
        )
    normal, bias, decision = (torch.cat(p) for p in zip(*parts))
    return _unit_cavs(normal, bias, decision, labels, train, test, acts.dtype)


def _unit_cavs(
    normal: Tensor, bias: Tensor, decision: Tensor, labels: Tensor, train: Tensor, test: Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    """Unit normals, their biases and the held-out accuracies (training accuracy without a test split)."""
    evaluate = torch.where(test.sum(1, keepdim=True) == 0, train, test).double()
    correct = ((decision > 0) == labels.bool()).double() * evaluate
    acc = (correct.sum(1) / evaluate.sum(1).clamp(min=1.0)).float()
    norm = normal.norm(dim=1).clamp(min=torch.finfo(normal.dtype).tiny)
    return (normal / norm.unsqueeze(1)).to(dtype), (bias / norm).to(dtype), acc


def _fit_shared_gram(
    acts: Tensor, rows: Tensor, labels: Tensor, train: Tensor, classifier: str, regularization: float, max_iter: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The dual solver with one ``[M, M]`` float64 Gram matrix of all rows (for small ``M`` only)."""
    classifier = check_classifier(classifier)
    reg = max(float(regularization), 1e-8)
    with torch.inference_mode(False), torch.no_grad():
        a = acts.detach().clone() if acts.is_inference() else acts.detach()
        full = _gram(a.unsqueeze(0))[0]  # [M, M]
        k, n = rows.shape
        w = train.detach().double()
        y = labels.detach().double() * 2.0 - 1.0
        step = _chunk_size(n, 0, "dual")
        coefs, means, biases, decisions = [], [], [], []
        for start in range(0, k, step):
            r = rows[start : start + step]
            gram = full[r.unsqueeze(2), r.unsqueeze(1)]  # [k, N, N]
            coef, mean_coef, bias_part, decision = _dual_from_gram(
                gram, y[start : start + step], w[start : start + step], classifier, reg, max_iter
            )
            coefs.append(
                torch.zeros(r.shape[0], a.shape[0], dtype=torch.float64, device=a.device).scatter_add_(1, r, coef)
            )
            means.append(torch.zeros_like(coefs[-1]).scatter_add_(1, r, mean_coef))
            biases.append(bias_part)
            decisions.append(decision)
        normal = _combine(torch.cat(coefs).unsqueeze(0), a.unsqueeze(0))  # [1, K, M] x [1, M, D]
        mean = _combine(torch.cat(means).unsqueeze(0), a.unsqueeze(0))
    return normal[0], torch.cat(biases) - (normal[0] * mean[0]).sum(1), torch.cat(decisions)


@dataclass(eq=False)
class CAV:
    """A concept activation vector: the unit normal of a linear boundary between a concept's
    activations and random activations at one layer, pointing towards the concept.

    Attributes:
        vector: Unit ``[D]`` tensor in the layer's flattened activation space for one input.
        bias: Offset of the boundary for the unit vector: ``a . vector + bias > 0`` is the concept side.
        accuracy: Held-out accuracy of the classifier (on ``test_fraction`` of each set).
        layer: Dotted name of the layer.
        concept: Name of the concept.
        classifier: ``"logistic"`` or ``"svm"``.
        min_accuracy: The accuracy below which the CAV counts as not separating its concept.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> concept, random = torch.randn(20, 2) + 3.0, torch.randn(20, 2)
        >>> cav = CAV.fit(model, "1", concept, random, seed=0)
        >>> cav.vector.shape, round(float(cav.vector.norm()), 4)
        (torch.Size([4]), 1.0)
    """

    vector: Tensor
    bias: float
    accuracy: float
    layer: str
    concept: str = "concept"
    classifier: str = "logistic"
    min_accuracy: float = 0.6

    @property
    def separates(self) -> bool:
        """Whether the held-out accuracy reaches :attr:`min_accuracy` (``False`` near chance)."""
        return bool(self.accuracy >= self.min_accuracy)

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        layer: str,
        concept: ExampleSource,
        random: ExampleSource,
        *,
        classifier: str = "logistic",
        test_fraction: float = 0.33,
        seed: int = 0,
        regularization: float = 0.01,
        batch_size: int | None = 64,
        name: str = "concept",
        min_accuracy: float = 0.6,
    ) -> CAV:
        """Train a CAV for ``concept`` against ``random`` at ``layer`` of ``model``.

        Both sets run through the model in one pass (inside ``observe``: nothing about the model
        changes); the classifier trains on the model's device.

        Args:
            model: The model.
            layer: Dotted name of the layer.
            concept: Examples of the concept (tensor, ``Dataset``, ``DataLoader`` or image folder).
            random: Random counter-examples, same formats.
            classifier: ``"logistic"`` (L2 logistic regression) or ``"svm"`` (squared hinge).
            test_fraction: Fraction of each set held out to measure :attr:`accuracy`, in ``[0, 0.9]``
                (``0``: accuracy on the training examples).
            seed: Seed of the train/test split; the same seed gives the same CAV.
            regularization: L2 strength (on centred activations scaled to unit RMS norm).
            batch_size: Forward at most this many examples at once.
            name: Name of the concept (messages, :attr:`concept`).
            min_accuracy: Warn when the held-out accuracy is below this.

        Returns:
            The fitted :class:`CAV`.

        Raises:
            ValueError: a set has fewer than :data:`MIN_EXAMPLES` examples, the sets' shapes differ
                or do not fit the model, an unknown layer, or an argument is out of range.

        Warns:
            UserWarning: the held-out accuracy is below ``min_accuracy`` (the CAV does not
                separate the concept from random; TCAV scores along it mean little).
        """
        classifier = check_classifier(classifier)
        test_fraction = check_float("test_fraction", test_fraction, 0.0, 0.9)
        seed = check_int("seed", seed, 0)
        regularization = check_float("regularization", regularization, 0.0)
        min_accuracy = check_float("min_accuracy", min_accuracy, 0.0, 1.0)
        pos = load_examples(concept, name=name)
        neg = load_examples(random, name="random")
        check_set_size(pos.shape[0], name)
        check_set_size(neg.shape[0], "random")
        if pos.shape[1:] != neg.shape[1:]:
            raise ValueError(
                f"CAV: the examples of {name!r} have shape {list(pos.shape[1:])} but the random examples "
                f"{list(neg.shape[1:])}."
            )
        acts = layer_activations(
            model,
            torch.cat([pos, neg.to(pos.device)]),
            layer,
            batch_size=batch_size,
            method="CAV",
            what=f"the {name!r} and random examples",
        )[layer]
        gen = torch.Generator().manual_seed(seed)
        split = (split_indices(pos.shape[0], test_fraction, gen), split_indices(neg.shape[0], test_fraction, gen))
        n = pos.shape[0]
        rows = torch.arange(acts.shape[0], device=acts.device)
        vectors, biases, acc = fit_cavs(
            acts, [(rows[:n], rows[n:])], [split], classifier=classifier, regularization=regularization
        )
        cav = cls(
            vector=vectors[0],
            bias=float(biases[0]),
            accuracy=float(acc[0]),
            layer=layer,
            concept=name,
            classifier=classifier,
            min_accuracy=min_accuracy,
        )
        if not cav.separates:
            warn_near_chance(name, layer, cav.accuracy, min_accuracy)
        return cav


def warn_near_chance(concept: str, layer: str, accuracy: float, min_accuracy: float, method: str = "CAV") -> None:
    """Warn that a concept's CAV does not separate it from random examples."""
    warnings.warn(
        f"{method}: the CAV of concept {concept!r} at layer {layer!r} separates it from random examples with "
        f"held-out accuracy {accuracy:.2f} (< min_accuracy={min_accuracy:.2f}, near chance): the layer may not "
        "represent the concept, and TCAV scores along this CAV mean little.",
        UserWarning,
        stacklevel=3,
    )
