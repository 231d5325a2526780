"""Anchors for images (Ribeiro, Singh & Guestrin 2018): KL-LUCB inside a beam search over
superpixel sets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import ExplainContext, OutputType, TargetType, chunks, resolve_target
from lightning_xai.attribution.sampling import default_chunk_size, generator, progress_bar
from lightning_xai.attribution.surrogate.base import BaselineType, _coalition_rows, _SuperpixelExplainer, _to_map
from lightning_xai.attribution.surrogate.segmentation import SegmentationType

__all__ = [
    "AnchorResult",
    "Anchors",
]


# Anchors
def _kl_bernoulli(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.minimum(np.maximum(p, 1e-12), 1 - 1e-12)
    q = np.minimum(np.maximum(q, 1e-12), 1 - 1e-12)
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def kl_bounds(means: Tensor | np.ndarray, level: Tensor | np.ndarray, iterations: int = 26) -> tuple[Tensor, Tensor]:
    """KL confidence bounds of Bernoulli means: the smallest ``lower <= mean`` and the largest
    ``upper >= mean`` with ``KL(mean || bound) <= level`` (bisection, vectorised; float64 NumPy,
    since the arrays are small and the search calls it every round).

    Examples:
        >>> low, up = kl_bounds(torch.tensor([0.5]), torch.tensor([0.1]))
        >>> round(float(low[0]), 3), round(float(up[0]), 3)
        (0.287, 0.713)
    """
    m = np.asarray(means, dtype=np.float64)
    lv = np.broadcast_to(np.asarray(level, dtype=np.float64), m.shape)
    lo, hi = m.copy(), np.ones_like(m)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        inside = _kl_bernoulli(m, mid) <= lv
        lo = np.where(inside, mid, lo)
        hi = np.where(inside, hi, mid)
    upper = lo
    lo, hi = np.zeros_like(m), m.copy()
    for _ in range(iterations):
        mid = (lo + hi) / 2
        inside = _kl_bernoulli(m, mid) <= lv
        hi = np.where(inside, mid, hi)
        lo = np.where(inside, lo, mid)
    return torch.from_numpy(hi), torch.from_numpy(upper)


@dataclass
class AnchorResult:
    """What :meth:`Anchors.explain` found for each input.

    Attributes:
        mask: ``[B, 1, H, W]`` 1 on the anchor's superpixels.
        anchors: The anchor's superpixel labels per input.
        precision: Estimated precision of each anchor.
        lower_bound: Its KL lower confidence bound at level ``1 - delta``.
        coverage: Share of the perturbation distribution the anchor applies to, ``p^|A|``.
        valid: Whether the lower bound reached the threshold (else the best anchor found).
        n_samples: Perturbed inputs evaluated per input.
        segments: ``[B, H, W]`` the superpixels.
    """

    mask: Tensor
    anchors: list[list[int]]
    precision: Tensor
    lower_bound: Tensor
    coverage: Tensor
    valid: Tensor
    n_samples: Tensor
    segments: Tensor


class Anchors(_SuperpixelExplainer):
    """Anchors for images (Ribeiro, Singh & Guestrin 2018): the smallest set of superpixels that,
    kept fixed while every other superpixel is independently kept with probability ``p_keep``
    (else replaced by the baseline), keeps the model's prediction with precision >=
    ``threshold`` at confidence ``1 - delta``.

    Beam search over anchor size: the candidates of size ``s`` extend the ``beam_size`` best
    anchors of size ``s - 1`` by one superpixel; KL-LUCB (Kaufmann & Kalyanakrishnan 2013)
    samples the candidates adaptively, ``batch_size`` perturbations per pull, until the best
    ``beam_size`` are identified within ``epsilon`` (exploration rate
    ``beta = log(405.5 n t^1.1 / delta) + log log(...)``, the Anchors paper's choice); each
    chosen candidate is then sampled until its KL lower bound clears ``threshold`` or its upper
    bound falls below it (at most ``max_samples`` perturbations). The first size with a candidate
    whose lower bound clears the threshold returns the most precise such candidate (same size
    means same coverage). The "prediction" is the target class (``None``: the predicted one).
    Inputs are explained one after the other (the search is adaptive), each with a generator
    seeded with ``seed``. The search stops when the next pull would exceed ``budget`` perturbed
    inputs for the image; it then returns the anchor with the best lower bound so far, with
    ``valid`` False unless that bound cleared the threshold.

    COST: per image at most ``budget`` perturbed inputs through the model (the exact number is
    :attr:`AnchorResult.n_samples`), in one forward pass per pull (``2 * batch_size`` rows per
    KL-LUCB round, ``batch_size`` per anchor per validation pull, ``n_init`` per new candidate,
    split into chunks of ``internal_batch_size``), plus one forward of the batch for the
    prediction. What the budget cuts: anchor size ``s`` costs ``n_init`` times its new candidates
    (up to ``beam_size * (K - s + 1)`` with ``K`` superpixels), plus the rounds, each candidate at
    most ``max_samples``; a model whose prediction needs many superpixels walks through many
    sizes, ``O(K^2 n_init)`` and more (360,000 perturbed inputs per 1x28x28 image with ``K = 49``
    on a small CNN, two minutes on one CPU thread; about 1.5 s with the default budget). Map: 1
    on the anchor, 0 elsewhere.

    Args:
        threshold: Precision ``tau``.
        delta: Confidence parameter.
        epsilon: KL-LUCB tolerance.
        beam_size: Anchors kept per size.
        max_anchor_size: Largest anchor tried (default: every superpixel).
        p_keep: Probability that a superpixel outside the anchor is kept.
        batch_size: Perturbations per pull.
        n_init: Perturbations per new candidate.
        max_samples: Most perturbations per candidate.
        budget: Most perturbed inputs per image over the whole search (``None``: no bound; the
            search then ends only at ``max_anchor_size``). Must cover the first size's
            ``n_init * K``.
        segmentation: ``"slic"``, ``"quickshift"``, ``"felzenszwalb"`` or a callable.
        segmentation_kwargs: Keyword arguments of the segmentation.
        baseline: Value of removed superpixels: a float, a tensor or ``"mean"``.
        seed: Seed of the private generator.
        internal_batch_size: Perturbed inputs per forward pass (default: device-aware bound).
        progress: Show a tqdm progress bar over the inputs.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
        >>> anchors = Anchors(segmentation_kwargs={"n_segments": 8}, max_samples=64)
        >>> anchors(model, torch.rand(2, 3, 16, 16)).shape
        torch.Size([2, 1, 16, 16])
    """

    signed: ClassVar[bool] = False

    def __init__(
        self,
        threshold: float = 0.95,
        delta: float = 0.1,
        epsilon: float = 0.1,
        beam_size: int = 1,
        max_anchor_size: int | None = None,
        p_keep: float = 0.5,
        batch_size: int = 32,
        n_init: int = 32,
        max_samples: int = 1024,
        budget: int | None = 10_000,
        segmentation: SegmentationType = "slic",
        segmentation_kwargs: dict[str, Any] | None = None,
        baseline: BaselineType = 0.0,
        seed: int = 0,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(segmentation, segmentation_kwargs, baseline, seed, internal_batch_size, progress)
        self.threshold = check_float("threshold", threshold, 0.0, 1.0)
        self.delta = check_float("delta", delta, 0.0, 1.0)
        if self.delta in (0.0, 1.0):
            raise ValueError(f"Expected argument `delta` in the open (0, 1) range, but got {self.delta}.")
        self.epsilon = check_float("epsilon", epsilon, 0.0, 1.0)
        self.beam_size = check_int("beam_size", beam_size, 1)
        self.max_anchor_size = check_int("max_anchor_size", max_anchor_size, 1, allow_none=True)
        self.p_keep = check_float("p_keep", p_keep, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.n_init = check_int("n_init", n_init, 1)
        self.max_samples = check_int("max_samples", max_samples, 1)
        self.budget = check_int("budget", budget, 1, allow_none=True)
        if self.budget is not None and self.budget < self.n_init:
            raise ValueError(f"Expected argument `budget` >= n_init ({self.n_init}), but got {self.budget}.")

    def explain(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType = None,
        *,
        segments: Tensor | None = None,
        output: OutputType = None,
    ) -> AnchorResult:
        """Find the anchors, with their precision, bounds and costs (see :class:`AnchorResult`);
        ``segments`` injects the superpixels, ``output`` as in :meth:`__call__`."""
        result: tuple[AnchorResult] = self._run(
            model, inputs, lambda x, ctx: (self._search(model, x, target, segments),), output=output
        )
        return result[0]

    def precision(
        self,
        model: nn.Module,
        inputs: Tensor,
        anchors: Sequence[Sequence[int]],
        target: TargetType = None,
        *,
        segments: Tensor | None = None,
        n_samples: int = 1000,
        seed: int = 12345,
        output: OutputType = None,
    ) -> Tensor:
        """Precision of given anchors on ``n_samples`` fresh perturbations per input (a seed
        apart from the search's), ``[B]``."""

        def compute(x: Tensor, ctx: ExplainContext) -> Tensor:
            x, segs, counts, baseline = self._prepare(x, segments)
            with torch.no_grad():
                resolved = resolve_target(target, model(x))
            gen = generator(seed, x.device)
            out = []
            for b in range(x.shape[0]):
                z = self._draw(int(counts[b]), list(anchors[b]), n_samples, gen)
                owner = torch.full((n_samples,), b, device=x.device)
                hits = self._hits(model, x, baseline, segs, owner, z, resolved[b])
                out.append(hits.double().mean())
            return torch.stack(out)

        result: Tensor = self._run(model, inputs, compute, output=output)
        return result

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        return self._search(model, inputs, target, None).mask

    def _draw(self, k: int, anchor: Sequence[int], n: int, gen: torch.Generator) -> Tensor:
        z = (torch.rand(n, k, generator=gen, device=gen.device) < self.p_keep).long()
        if anchor:
            z[:, list(anchor)] = 1
        return z

    def _hits(
        self, model: nn.Module, x: Tensor, baseline: Tensor, segments: Tensor, owner: Tensor, z: Tensor, label: Tensor
    ) -> Tensor:
        chunk = default_chunk_size(x, self.internal_batch_size)
        hits = []
        with torch.no_grad():
            for sl in chunks(z.shape[0], chunk):
                rows = _coalition_rows(x, baseline, segments, owner[sl], z[sl])
                hits.append(model(rows).argmax(1) == label)
        return torch.cat(hits)

    def _beta(self, n_candidates: int, t: int) -> float:
        temp = math.log(405.5 * n_candidates * t**1.1 / self.delta)
        return temp + math.log(max(temp, 1.0))

    def _search(self, model: nn.Module, inputs: Tensor, target: TargetType, segments: Tensor | None) -> AnchorResult:
        x, segs, counts, baseline = self._prepare(inputs, segments)
        with torch.no_grad():
            resolved = resolve_target(target, model(x))
        batch = x.shape[0]
        anchors, precisions, lowers, coverages, valids, costs = [], [], [], [], [], []
        with progress_bar(batch, self.progress, "Anchors") as update:
            for b in range(batch):
                anchor, prec, lower, valid, cost = self._search_one(
                    model, x, baseline, segs, b, int(counts[b]), resolved[b]
                )
                anchors.append(sorted(anchor))
                precisions.append(prec)
                lowers.append(lower)
                coverages.append(self.p_keep ** len(anchor))
                valids.append(valid)
                costs.append(cost)
                update(1)
        member = torch.zeros(batch, int(counts.max()), device=x.device, dtype=x.dtype)
        for b, anchor in enumerate(anchors):
            member[b, anchor] = 1
        return AnchorResult(
            mask=_to_map(member, segs),
            anchors=anchors,
            precision=torch.tensor(precisions, dtype=torch.float64),
            lower_bound=torch.tensor(lowers, dtype=torch.float64),
            coverage=torch.tensor(coverages, dtype=torch.float64),
            valid=torch.tensor(valids),
            n_samples=torch.tensor(costs),
            segments=segs,
        )

    def _search_one(
        self, model: nn.Module, x: Tensor, baseline: Tensor, segs: Tensor, b: int, k: int, label: Tensor
    ) -> tuple[frozenset[int], float, float, bool, int]:
        gen = generator(self.seed, x.device)
        stats: dict[frozenset[int], list[int]] = {}  # anchor -> [pulls, hits]
        cost = 0
        budget = self.budget if self.budget is not None else math.inf
        if k * self.n_init > budget:
            raise ValueError(
                f"Anchors: the first anchor size needs n_init * superpixels = {self.n_init} * {k} = "
                f"{k * self.n_init} perturbed inputs, more than budget={self.budget}; raise `budget`, lower "
                "`n_init` or use fewer superpixels (`segmentation_kwargs`)."
            )

        def pull(requests: list[tuple[frozenset[int], int]]) -> bool:
            """Evaluate the requests unless that would exceed the budget (then ``False``)."""
            nonlocal cost
            if cost + sum(n for _, n in requests) > budget:
                return False
            zs = [self._draw(k, sorted(a), n, gen) for a, n in requests]
            z = torch.cat(zs)
            owner = torch.full((z.shape[0],), b, device=x.device)
            hits = self._hits(model, x, baseline, segs, owner, z, label)
            cost += z.shape[0]
            start = 0
            for a, n in requests:
                entry = stats.setdefault(a, [0, 0])
                entry[0] += n
                entry[1] += int(hits[start : start + n].sum())
                start += n
            return True

        def bounds(cands: list[frozenset[int]], t: int) -> tuple[Tensor, Tensor, Tensor]:
            n = np.array([stats[a][0] for a in cands], dtype=np.float64)
            mean = np.array([stats[a][1] for a in cands], dtype=np.float64) / n
            low, up = kl_bounds(mean, self._beta(n_arms, t) / n)
            return torch.from_numpy(mean), low, up

        beam: list[frozenset[int]] = [frozenset()]
        best: tuple[frozenset[int], float, float] | None = None
        n_arms = 1
        max_size = min(k, self.max_anchor_size or k)
        exhausted = False
        for _size in range(1, max_size + 1):
            candidates = sorted({a | {j} for a in beam for j in range(k) if j not in a}, key=sorted)
            if not candidates:
                break
            new = [(a, self.n_init) for a in candidates if a not in stats]
            if new and not pull(new):
                break  # the budget cannot start this size: keep the best of the smaller ones
            n_arms = len(candidates)
            # KL-LUCB: identify the beam_size best candidates within epsilon
            m = min(self.beam_size, len(candidates))
            t = 1
            while True:
                mean, low, up = bounds(candidates, t)
                order = torch.argsort(mean, descending=True, stable=True)
                chosen, rest = order[:m], order[m:]
                if rest.numel() == 0:
                    break
                worst_in = chosen[torch.argmin(low[chosen])]
                best_out = rest[torch.argmax(up[rest])]
                if float(up[best_out] - low[worst_in]) <= self.epsilon:
                    break
                requests = [
                    (candidates[int(i)], self.batch_size)
                    for i in (worst_in, best_out)
                    if stats[candidates[int(i)]][0] < self.max_samples
                ]
                if not requests:
                    break
                if not pull(requests):
                    exhausted = True
                    break
                t += 1
            beam = [candidates[int(i)] for i in chosen]
            # validate the beam: sample until the bound decides (or the budget is spent); the
            # bounds use the exploration rate of the whole candidate set, as in KL-LUCB
            while True:
                mean_b, low_b, up_b = bounds(beam, t)
                undecided = [
                    (a, min(self.batch_size, self.max_samples - stats[a][0]))
                    for i, a in enumerate(beam)
                    if float(low_b[i]) < self.threshold <= float(up_b[i]) and stats[a][0] < self.max_samples
                ]
                if not undecided or not pull(undecided):
                    exhausted = exhausted or bool(undecided)
                    break
            valid = [i for i in range(len(beam)) if float(low_b[i]) >= self.threshold]
            if valid:
                i = max(valid, key=lambda j: (float(mean_b[j]), float(low_b[j])))
                return beam[i], float(mean_b[i]), float(low_b[i]), True, cost
            i = int(torch.argmax(low_b))
            if best is None or float(low_b[i]) > best[2]:
                best = (beam[i], float(mean_b[i]), float(low_b[i]))
            if exhausted:
                break
        if best is None:  # no superpixel at all
            return frozenset(), 1.0, 1.0, False, cost
        return best[0], best[1], best[2], False, cost
