"""Testing with Concept Activation Vectors (Kim et al. 2018), with a calibrated significance test.

For each concept and layer, :class:`TCAV` trains ``n_random`` CAVs of the concept against
``n_random`` random sets, and ``n_random`` CAVs of random against random (set ``i + 1`` against
set ``i``, cyclically: each null CAV has its own random "concept"): the null distribution.
*Relative* CAVs (Kim et al. 2018, section 3.4) train one concept against another (``relative=
[("striped", "plain")]``), ``n_random`` times on different seeded train splits.

Along each CAV ``v`` a *statistic* summarises the directional derivatives ``g_i . v`` of the
class score (``g_i``: its gradient w.r.t. the layer for input ``i``):

* ``"effect"`` (default): ``mean_i(g_i . v) * (v . (mu_pos - mu_neg))``, the first-order change of
  the class score when an input's activations move from the negative set's mean to the concept's
  mean along the CAV. It does not saturate, and it weighs a direction by how far the concept
  actually moves the activations along it, so a random-vs-random CAV (a small displacement) scores
  near 0 while a spatially small concept (a corner marker) is not penalised for its size.
* ``"cosine"``: ``mean_i cos(g_i, v)``. Does not saturate, but a CAV concentrated on ``k`` of ``H W``
  positions of a feature map has at most ``sqrt(k / (H W))`` of the cosine of a spread-out one
  when the gradient is spatially uniform (a layer before global pooling): small concepts look weak.
* ``"sign"``: the paper's TCAV score, the fraction of inputs with ``g_i . v > 0``. Where the gradient
  barely changes from input to input (any layer followed by global pooling and a linear head),
  every direction scores 0 or 1: the random-vs-random scores are bimodal and a score of 1 cannot be
  told from half of them.
* ``"magnitude"``: the paper's magnitude variant ``sum(max(g . v, 0)) / sum(|g . v|)``; it
  saturates like ``"sign"``.

The test (``test=``) compares the concept's ``n_random`` statistics with the null ones:

* ``"prediction"`` (default): a t-test of the concept's *mean* against the spread of *single*
  null values (:func:`~lightning_xai.concepts.functional.prediction_test`). All of a concept's CAVs
  share one concept set, so its runs are correlated; the test treats their mean as one draw of a
  random "concept", which is valid whatever that correlation.
* ``"welch"``: the paper's two-sample t-test. It counts correlated runs as independent samples and
  flags random "concepts" far more often than ``alpha``.

A Bonferroni correction over the concept x layer tests of one call decides
:attr:`TCAVResult.significant`. An insignificant result is reported as such, never dropped.

Cost: one forward pass over every concept and random example for all layers (in batches of
``batch_size``; the random sets are read and forwarded one at a time), and one forward plus one
backward pass over the inputs for all concepts, layers and CAVs together. Memory: the concepts'
and at most three random sets' activations at once, plus one chunk of CAV problems (see
:func:`~lightning_xai.concepts.cav.fit_linear`): independent of ``n_random``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import OutputType, TargetType, check_output, get_layer
from lightning_xai.concepts.cav import (
    CAV,
    check_classifier,
    check_set_size,
    fit_cavs,
    split_indices,
    warn_near_chance,
)
from lightning_xai.concepts.examples import ExampleSource, _inputs_of, example_count, load_examples, sample_indices
from lightning_xai.concepts.functional import (
    layer_activations,
    layer_gradients,
    prediction_test,
    tcav_statistic,
    welch_t_test,
)

__all__ = ["TCAV", "TCAVResult", "FittedCAVs", "RandomSource", "TESTS", "STATISTICS", "relative_name"]

TESTS: tuple[str, ...] = ("prediction", "welch")
"""The significance tests :class:`TCAV` offers (see its ``test`` argument)."""

STATISTICS: tuple[str, ...] = ("effect", "cosine", "sign", "magnitude")
"""The statistics :class:`TCAV` can test (see the module docs)."""

RandomSource = Union[Sequence[ExampleSource], Tensor, Dataset, DataLoader]
"""Random counter-examples: a list of ``n_random`` (or more) example sets, or one pool (a tensor,
``Dataset`` or ``DataLoader``'s dataset) from which :class:`TCAV` draws ``n_random`` disjoint sets."""

Pairs = Sequence[Sequence[str]]


def relative_name(positive: str, negative: str) -> str:
    """The name of the relative CAV of ``positive`` against ``negative``: ``"<positive>-vs-<negative>"``."""
    return f"{positive}-vs-{negative}"


@dataclass(eq=False)
class TCAVResult:
    """TCAV of every concept at every layer for one class: one type for one or many.

    Every tensor field is indexed ``[concept, layer, ...]`` in the order of :attr:`concepts` and
    :attr:`layers` (relative CAVs follow the plain concepts, named by :func:`relative_name`).
    ``result["red"]`` or ``result["red", "layer4"]`` selects a sub-result of the same type; for one
    concept at one layer, ``float(result.score)`` is the number.

    Attributes:
        concepts: Concept names (then relative names).
        layers: Layer names.
        target: The class index (``None`` when the call explained each input's prediction).
        statistic: The tested statistic (one of :data:`STATISTICS`).
        test: The test (one of :data:`TESTS`).
        score: ``[C, L]`` mean of :attr:`scores`.
        scores: ``[C, L, n_random]`` the statistic along each run's CAV.
        score_std: ``[C, L]`` standard deviation of :attr:`scores` over the runs (error bars).
        random_scores: ``[C, L, n_random]`` the statistic along the random-vs-random CAVs (the null;
            the same for every concept of a layer).
        sign_count: ``[C, L]`` the paper's TCAV score (fraction of inputs with a positive
            directional derivative), mean over runs, whatever :attr:`statistic` is.
        p_value: ``[C, L]`` Bonferroni-corrected two-sided p-values (``min(1, raw * num_tests)``).
        p_value_raw: ``[C, L]`` the test's p-values before correction.
        significant: ``[C, L]`` bool, ``p_value < alpha``.
        accuracy: ``[C, L]`` mean held-out accuracy of the CAVs.
        accuracies: ``[C, L, n_random]`` held-out accuracies.
        separates: ``[C, L]`` bool, ``accuracy >= min_accuracy`` (``False``: near chance).
        num_tests: The number of concept x layer tests in the correction.
        alpha: The significance level.
    """

    concepts: list[str]
    layers: list[str]
    target: int | None
    statistic: str
    test: str
    score: Tensor
    scores: Tensor
    score_std: Tensor
    random_scores: Tensor
    sign_count: Tensor
    p_value: Tensor
    p_value_raw: Tensor
    significant: Tensor
    accuracy: Tensor
    accuracies: Tensor
    separates: Tensor
    num_tests: int
    alpha: float

    _FIELDS = (
        "score",
        "scores",
        "score_std",
        "random_scores",
        "sign_count",
        "p_value",
        "p_value_raw",
        "significant",
        "accuracy",
        "accuracies",
        "separates",
    )

    def __getitem__(self, key: str | tuple[str, str]) -> TCAVResult:
        """The sub-result of one concept (``"red"``) or one concept at one layer (``("red", "layer4")``).

        Raises:
            KeyError: an unknown concept or layer (the message lists the known ones).
        """
        concept, layer = key if isinstance(key, tuple) else (key, None)
        if concept not in self.concepts:
            raise KeyError(f"Unknown concept {concept!r}; the result holds {self.concepts}.")
        if layer is not None and layer not in self.layers:
            raise KeyError(f"Unknown layer {layer!r}; the result holds {self.layers}.")
        c = self.concepts.index(concept)
        ls = list(range(len(self.layers))) if layer is None else [self.layers.index(layer)]
        picked = {name: getattr(self, name)[c : c + 1][:, ls] for name in self._FIELDS}
        return replace(self, concepts=[concept], layers=[self.layers[i] for i in ls], **picked)

    def __repr__(self) -> str:
        lines = [
            f"TCAVResult(target={self.target}, statistic={self.statistic!r}, test={self.test!r}, alpha={self.alpha})"
        ]
        for c, concept in enumerate(self.concepts):
            for li, layer in enumerate(self.layers):
                flag = "significant" if bool(self.significant[c, li]) else "not significant"
                lines.append(
                    f"  {concept} @ {layer}: {self.statistic}={float(self.score[c, li]):.4g}"
                    f"+-{float(self.score_std[c, li]):.2g} (random {float(self.random_scores[c, li].mean()):.2g}"
                    f"+-{float(self.random_scores[c, li].std()):.2g}), p={float(self.p_value[c, li]):.3g} ({flag}), "
                    f"sign count {float(self.sign_count[c, li]):.2f}, cav accuracy {float(self.accuracy[c, li]):.2f}"
                )
        return "\n".join(lines)


@dataclass(eq=False)
class FittedCAVs:
    """Every CAV of one :meth:`TCAV.fit` call.

    Attributes:
        concepts: Concept names, then the relative names, in order.
        layers: Layer names, in order.
        n_random: Number of runs per concept (random sets).
        vectors: ``{layer: [C + 1, n_random, D]}`` unit CAVs; row ``C`` holds the random-vs-random
            CAVs (random set ``i + 1`` against set ``i``).
        displacements: ``{layer: [C + 1, n_random]}`` ``v . (mu_pos - mu_neg)``: how far the mean
            activation moves along each CAV from its negative set to its positive set.
        accuracies: ``{layer: [C + 1, n_random]}`` held-out accuracies.
        relative: The ``(positive, negative)`` concept pairs of the relative CAVs.
        classifier: The classifier they were trained with.
        min_accuracy: The separation threshold of the :class:`TCAV` that fitted them.
        example_shape: The shape of one example.
    """

    concepts: list[str]
    layers: list[str]
    n_random: int
    vectors: dict[str, Tensor]
    displacements: dict[str, Tensor]
    accuracies: dict[str, Tensor]
    relative: list[tuple[str, str]] = field(default_factory=list)
    classifier: str = "logistic"
    min_accuracy: float = 0.6
    example_shape: tuple[int, ...] = field(default=())

    def cav(self, concept: str, layer: str, run: int = 0) -> CAV:
        """The CAV of ``concept`` against random set ``run`` at ``layer`` (``concept="random"``
        with no concept of that name: the random-vs-random CAV of that run)."""
        if layer not in self.vectors:
            raise ValueError(f"Unknown layer {layer!r}; the CAVs are for {self.layers}.")
        row = self.concepts.index(concept) if concept in self.concepts else None
        if row is None and concept == "random":
            row = len(self.concepts)
        if row is None:
            raise ValueError(f"Unknown concept {concept!r}; the CAVs are for {self.concepts}.")
        run = check_int("run", run, 0, self.n_random - 1)
        return CAV(
            vector=self.vectors[layer][row, run],
            bias=math.nan,
            accuracy=float(self.accuracies[layer][row, run]),
            layer=layer,
            concept=concept,
            classifier=self.classifier,
            min_accuracy=self.min_accuracy,
        )

    def mean_accuracy(self, concept: str, layer: str) -> float:
        """Mean held-out accuracy of ``concept``'s CAVs at ``layer``."""
        return float(self.accuracies[layer][self.concepts.index(concept)].mean())


def _example_shape(source: ExampleSource) -> tuple[int, ...] | None:
    """The shape of one example of ``source`` from at most one item, or ``None`` if that needs reading more."""
    if isinstance(source, Tensor):
        return tuple(source.shape[1:])
    if isinstance(source, Dataset) and hasattr(source, "__len__") and len(source) > 0:  # type: ignore[arg-type]
        return tuple(_inputs_of(source[0], "item 0").shape)
    return None


def _as_concepts(concepts: ExampleSource | Mapping[str, ExampleSource]) -> dict[str, ExampleSource]:
    if isinstance(concepts, Mapping):
        if not concepts:
            raise ValueError("TCAV: expected at least one concept, but got an empty mapping.")
        for name in concepts:
            if not isinstance(name, str) or not name:
                raise TypeError(f"TCAV: expected concept names to be non-empty strings, but got {name!r}.")
            if name == "random":
                raise ValueError("TCAV: 'random' is reserved for the random-vs-random CAVs; rename the concept.")
        return dict(concepts)
    return {"concept": concepts}


def check_relative(relative: Pairs | None, concepts: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """Validate relative concept pairs: a list of ``(positive, negative)`` names of two different
    concepts (of ``concepts`` when given).

    Raises:
        TypeError: not a list of pairs of strings.
        ValueError: a pair of one concept with itself, or a name that is not a concept.
    """
    if relative is None:
        return []
    if isinstance(relative, str) or not isinstance(relative, Sequence):
        raise TypeError(f"Expected argument `relative` to be a list of (concept, concept) pairs, but got {relative!r}.")
    pairs = []
    for pair in relative:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TypeError(f"Expected each relative pair to be (positive, negative) concept names, but got {pair!r}.")
        a, b = pair
        if not isinstance(a, str) or not isinstance(b, str):
            raise TypeError(f"Expected each relative pair to be (positive, negative) concept names, but got {pair!r}.")
        if a == b:
            raise ValueError(f"A relative pair needs two different concepts, but got {pair!r}.")
        for name in (a, b):
            if concepts is not None and name not in concepts:
                raise ValueError(
                    f"The relative pair {pair!r} names {name!r}, which is not a concept: {list(concepts)}."
                )
        pairs.append((a, b))
    return list(dict.fromkeys(pairs))


class TCAV:
    """TCAV of concepts for a class, with a calibrated significance test.

    Holds configuration only; the model comes at call time. Called as
    ``tcav(model, inputs, target, concepts, random_sets, relative=...)``: ``inputs`` are examples
    of the class ``target`` (the paper scores a class on its own images). See the module docs for
    the statistics and tests and when each misleads.

    The default (``"effect"`` + ``"prediction"``) keeps the rate of significant random "concepts"
    at or below ``alpha`` and finds a concept the layer detects; ``"sign"`` misses it where the
    layer's gradient is input-independent, and ``"welch"`` flags random concepts far more often
    than ``alpha`` (the measurements are in the docs' concepts page).

    Args:
        layers: One dotted layer name or several.
        n_random: Number of random sets (CAVs per concept and layer), at least 2.
        alpha: Significance level of the Bonferroni-corrected two-sided test.
        classifier: ``"logistic"`` or ``"svm"`` (see :class:`~lightning_xai.concepts.CAV`).
        test_fraction: Held-out fraction of each set for the CAV accuracies.
        regularization: L2 strength of the CAV classifiers.
        random_size: Examples per random set drawn from a pool (default: the largest concept set).
        batch_size: Forward at most this many examples at once.
        seed: Seed of the splits and of the random sets drawn from a pool.
        statistic: One of :data:`STATISTICS` (default ``"effect"``).
        min_accuracy: A concept whose CAVs' mean held-out accuracy is below this is warned about
            and marked ``separates=False``.
        test: One of :data:`TESTS` (default ``"prediction"``).
        output: Where the ``[B, C]`` scores are when the model returns a tuple, dict or dataclass
            (see :func:`~lightning_xai.attribution.base.select_output`).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Examples:
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> concept, pool = torch.randn(10, 4) + 2.0, torch.randn(60, 4)
        >>> result = TCAV("1", n_random=3)(model, torch.randn(6, 4), 0, concept, pool)
        >>> result.score.shape, result.scores.shape
        (torch.Size([1, 1]), torch.Size([1, 1, 3]))
    """

    def __init__(
        self,
        layers: str | Sequence[str],
        n_random: int = 10,
        alpha: float = 0.05,
        *,
        classifier: str = "logistic",
        test_fraction: float = 0.33,
        regularization: float = 0.01,
        random_size: int | None = None,
        batch_size: int | None = 64,
        seed: int = 0,
        statistic: str = "effect",
        min_accuracy: float = 0.6,
        test: str = "prediction",
        output: OutputType = None,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        if not isinstance(layers, Sequence) or not layers or not all(isinstance(n, str) and n for n in layers):
            raise TypeError(
                f"Expected argument `layers` to be a layer name or a non-empty list of them, but got {layers!r}."
            )
        self.layers = list(dict.fromkeys(layers))
        self.n_random = check_int("n_random", n_random, 2)
        self.alpha = check_float("alpha", alpha, 0.0, 1.0)
        self.classifier = check_classifier(classifier)
        self.test_fraction = check_float("test_fraction", test_fraction, 0.0, 0.9)
        self.regularization = check_float("regularization", regularization, 0.0)
        self.random_size = check_int("random_size", random_size, 2, allow_none=True)
        self.batch_size = check_int("batch_size", batch_size, 1, allow_none=True)
        self.seed = check_int("seed", seed, 0)
        if statistic not in STATISTICS:
            raise ValueError(f"Expected argument `statistic` to be one of {list(STATISTICS)}, but got {statistic!r}.")
        self.statistic = statistic
        self.min_accuracy = check_float("min_accuracy", min_accuracy, 0.0, 1.0)
        if test not in TESTS:
            raise ValueError(f"Expected argument `test` to be one of {list(TESTS)}, but got {test!r}.")
        self.output = check_output(output)
        self.test = test

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    # -- checks -------------------------------------------------------------------------------
    def check(self, model: nn.Module) -> None:
        """Check that every layer exists in ``model``.

        Raises:
            ValueError: an unknown layer (the message lists the valid names).
        """
        for name in self.layers:
            get_layer(model, name, method="TCAV")

    # -- CAVs ---------------------------------------------------------------------------------
    def random_sources(self, random_sets: RandomSource, size: int) -> list[ExampleSource]:
        """The ``n_random`` random sets, unread: the first ``n_random`` of a list, or ``Subset`` objects
        (tensor slices for a tensor pool) drawn from a pool with ``seed`` (disjoint when the pool
        holds ``n_random * size`` examples). Nothing of a ``Dataset`` pool is read here.

        Raises:
            ValueError: a list with fewer than ``n_random`` sets, or a pool smaller than a set.
            TypeError: an unsupported type.
        """
        if isinstance(random_sets, (list, tuple)):
            if len(random_sets) < self.n_random:
                raise ValueError(
                    f"TCAV: expected at least n_random={self.n_random} random sets, but got {len(random_sets)}."
                )
            return list(random_sets[: self.n_random])
        pool = random_sets.dataset if isinstance(random_sets, DataLoader) else random_sets
        if not isinstance(pool, (Tensor, Dataset)):
            raise TypeError(
                "TCAV: expected `random_sets` to be a list of example sets, a tensor, a Dataset or a DataLoader, "
                f"but got {type(random_sets).__name__}."
            )
        picks = sample_indices(pool, self.n_random, self.random_size or size, seed=self.seed, name="random")
        if isinstance(pool, Tensor):
            return [pool[p.to(pool.device)].detach() for p in picks]
        return [Subset(pool, p.tolist()) for p in picks]

    def random_sets(self, random_sets: RandomSource, size: int) -> list[Tensor]:
        """The ``n_random`` random sets, read (see :meth:`random_sources`).

        Raises:
            ValueError: a list with fewer than ``n_random`` sets, or a set that is too small.
        """
        sets = [load_examples(s, name=f"random {i}") for i, s in enumerate(self.random_sources(random_sets, size))]
        for i, s in enumerate(sets):
            check_set_size(s.shape[0], f"random {i}", "TCAV")
        return sets

    def fit(
        self,
        model: nn.Module,
        concepts: ExampleSource | Mapping[str, ExampleSource],
        random_sets: RandomSource,
        relative: Pairs | None = None,
    ) -> FittedCAVs:
        """Train every CAV: each concept against each random set, each relative pair ``n_random``
        times (on different train splits), and random against random, at every layer.

        Streams the random sets: they are read one at a time (a ``Dataset`` pool item by item),
        their activations at every layer come from one forward pass (batches of ``batch_size``
        moved to the model's device), and every CAV that needs them is trained before the next
        set is read. At most the concepts' and three random sets' activations are held at once,
        whatever ``n_random``; each CAV problem is solved by
        :func:`~lightning_xai.concepts.cav.fit_cavs` (memory of one problem, never
        ``total examples^2``).

        Args:
            model: The model.
            concepts: One example set, or ``{name: examples}`` for several concepts.
            random_sets: A list of at least ``n_random`` example sets, or one pool to draw from.
            relative: ``(positive, negative)`` pairs of concept names: relative CAVs of one concept
                against the other (named ``"<positive>-vs-<negative>"``).

        Returns:
            The :class:`FittedCAVs`.

        Raises:
            ValueError: too few examples, shapes that differ or do not fit the model, an unknown
                layer, a relative pair naming an unknown concept.

        Warns:
            UserWarning: a concept's CAVs separate it from random at near-chance accuracy.
        """
        self.check(model)
        named = _as_concepts(concepts)
        pairs = check_relative(relative, list(named))
        sets = {name: load_examples(source, name=name) for name, source in named.items()}
        for name, examples in sets.items():
            check_set_size(examples.shape[0], name, "TCAV")
        sources = self.random_sources(random_sets, max(s.shape[0] for s in sets.values()))
        shapes = {name: tuple(s.shape[1:]) for name, s in sets.items()}
        for i, source in enumerate(sources):  # checked before any forward pass, where one item tells
            shape = _example_shape(source)
            if shape is not None:
                shapes[f"random {i}"] = shape
        if len(set(shapes.values())) > 1:
            raise ValueError(f"TCAV: the example sets have different shapes: {shapes}.")
        example_shape = next(iter(shapes.values()))
        c, n = len(sets), self.n_random

        def activations(examples: Tensor, what: str) -> dict[str, Tensor]:
            return layer_activations(model, examples, self.layers, batch_size=self.batch_size, method="TCAV", what=what)

        def read_random(i: int) -> Tensor:
            examples = load_examples(sources[i], name=f"random {i}")
            check_set_size(examples.shape[0], f"random {i}", "TCAV")
            if tuple(examples.shape[1:]) != example_shape:
                raise ValueError(
                    f"TCAV: the example sets have different shapes: random set {i} has {list(examples.shape[1:])}, "
                    f"the concepts {list(example_shape)}."
                )
            return examples

        # splits in a fixed order: concepts, random sets, then the relative runs
        sizes = [s.shape[0] for s in sets.values()]
        randoms: dict[int, Tensor] = {}
        for i, source in enumerate(sources):
            count = example_count(source) if not isinstance(source, (list, tuple)) else None
            if count is None:  # unknown without reading (an iterable, a folder): read it now
                randoms[i] = read_random(i)
                count = randoms[i].shape[0]
            sizes.append(count)
        gen = torch.Generator().manual_seed(self.seed)
        splits = [split_indices(size, self.test_fraction, gen) for size in sizes]
        index = {name: i for i, name in enumerate(sets)}
        relative_splits = [
            [tuple(split_indices(sizes[i], self.test_fraction, gen) for i in (index[a], index[b])) for _ in range(n)]
            for a, b in pairs
        ]
        rows_total = c + len(pairs) + 1
        vectors: dict[str, Tensor] = {}
        displacements = {layer: torch.zeros(rows_total, n) for layer in self.layers}
        accuracies = {layer: torch.zeros(rows_total, n) for layer in self.layers}

        concept_acts = activations(torch.cat([s.cpu() for s in sets.values()]), "the concept examples")
        bounds = torch.tensor([0, *sizes[:c]]).cumsum(0).tolist()

        def fit(
            layer: str, blocks: list[Tensor], pairs_index: list[tuple[int, int]], pair_splits: list, where: list
        ) -> None:
            """Fit the CAVs of ``pairs_index`` (indices into ``blocks``) at ``layer``, store them at ``where``."""
            offsets = torch.tensor([0, *[b.shape[0] for b in blocks]]).cumsum(0).tolist()
            a = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
            rows = torch.arange(offsets[-1], device=a.device)
            parts = [rows[offsets[i] : offsets[i + 1]] for i in range(len(blocks))]
            v, _, acc = fit_cavs(
                a,
                [(parts[p], parts[q]) for p, q in pairs_index],
                pair_splits,
                classifier=self.classifier,
                regularization=self.regularization,
            )
            means = torch.stack([b.double().mean(0) for b in blocks])  # [S, D]
            pos = torch.tensor([p for p, _ in pairs_index], device=a.device)
            neg = torch.tensor([q for _, q in pairs_index], device=a.device)
            disp = (v.double() * (means[pos] - means[neg])).sum(1).float().cpu()
            if layer not in vectors:
                vectors[layer] = torch.zeros(rows_total, n, v.shape[1], dtype=v.dtype, device=v.device)
            for j, (row, run) in enumerate(where):
                vectors[layer][row, run] = v[j]
                displacements[layer][row, run] = disp[j]
                accuracies[layer][row, run] = acc[j].cpu()

        for layer in self.layers:
            blocks = [concept_acts[layer][bounds[i] : bounds[i + 1]] for i in range(c)]
            if not pairs:
                continue
            pi, ps, where = [], [], []
            for r_i, (a, b) in enumerate(pairs):  # relative runs: the same two sets, a fresh split per run
                for run in range(n):
                    pi.append((index[a], index[b]))
                    ps.append(relative_splits[r_i][run])
                    where.append((c + r_i, run))
            fit(layer, blocks, pi, ps, where)

        first: dict[str, Tensor] | None = None
        previous: dict[str, Tensor] | None = None
        for r in range(n):  # one random set at a time; the first and the previous are kept
            current = activations(randoms.pop(r) if r in randoms else read_random(r), f"random set {r}")
            for layer in self.layers:
                blocks = [concept_acts[layer][bounds[i] : bounds[i + 1]] for i in range(c)]
                pi = [(i, c) for i in range(c)]
                ps = [(splits[i], splits[c + r]) for i in range(c)]
                where = [(i, r) for i in range(c)]
                blocks.append(current[layer])
                if previous is not None:  # random set r against random set r - 1: null run r - 1
                    blocks.append(previous[layer])
                    pi.append((c, c + 1))
                    ps.append((splits[c + r], splits[c + r - 1]))
                    where.append((rows_total - 1, r - 1))
                fit(layer, blocks, pi, ps, where)
            if first is None:
                first = current
            previous = current
        assert first is not None and previous is not None
        for layer in self.layers:  # random set 0 against the last one: null run n - 1
            fit(
                layer,
                [first[layer], previous[layer]],
                [(0, 1)],
                [(splits[c], splits[c + n - 1])],
                [(rows_total - 1, n - 1)],
            )
        fitted = FittedCAVs(
            concepts=[*sets, *(relative_name(a, b) for a, b in pairs)],
            layers=list(self.layers),
            n_random=n,
            vectors=vectors,
            displacements=displacements,
            accuracies=accuracies,
            relative=pairs,
            classifier=self.classifier,
            min_accuracy=self.min_accuracy,
            example_shape=tuple(example_shape),
        )
        for name in fitted.concepts:
            for layer in self.layers:
                acc = fitted.mean_accuracy(name, layer)
                if acc < self.min_accuracy:
                    warn_near_chance(name, layer, acc, self.min_accuracy, method="TCAV")
        return fitted

    # -- scores -------------------------------------------------------------------------------
    def score(self, model: nn.Module, inputs: Tensor, target: TargetType, cavs: FittedCAVs) -> TCAVResult:
        """The statistic and its significance for every concept x layer of ``cavs``, for ``target``.

        One forward and one backward pass over ``inputs`` (in batches of ``batch_size``).

        Args:
            model: The model the CAVs were fitted on.
            inputs: ``[B, ...]`` examples of the class.
            target: The class index (``int``), ``[B]`` indices, or ``None`` for each input's prediction.
            cavs: The output of :meth:`fit`.

        Returns:
            The :class:`TCAVResult` (every concept, relative pair and layer).

        Raises:
            ValueError: inputs whose shape differs from the concept examples', or a class index
                out of range.
        """
        if not isinstance(cavs, FittedCAVs):
            raise TypeError(f"TCAV: expected `cavs` from TCAV.fit, but got {type(cavs).__name__}.")
        if isinstance(inputs, Tensor) and cavs.example_shape and tuple(inputs.shape[1:]) != cavs.example_shape:
            raise ValueError(
                f"TCAV: the inputs have shape {list(inputs.shape[1:])} per example, but the concept examples "
                f"{list(cavs.example_shape)}."
            )
        grads, resolved = layer_gradients(
            model, inputs, target, cavs.layers, batch_size=self.batch_size, method="TCAV", output=self.output
        )
        unique = torch.unique(resolved)
        target_index = int(unique[0]) if unique.numel() == 1 else None
        c, n, nl = len(cavs.concepts), cavs.n_random, len(cavs.layers)
        num_tests = c * nl
        scores = torch.zeros(c + 1, nl, n)
        signs = torch.zeros(c + 1, nl, n)
        for li, layer in enumerate(cavs.layers):
            g = grads[layer]
            vectors = cavs.vectors[layer].reshape((c + 1) * n, -1).to(device=g.device, dtype=g.dtype)
            derivatives = g @ vectors.T
            disp = cavs.displacements[layer].reshape(-1)
            stat = tcav_statistic(derivatives, self.statistic, gradient_norms=g.norm(dim=1), displacements=disp)
            scores[:, li] = stat.float().cpu().view(c + 1, n)
            signs[:, li] = tcav_statistic(derivatives, "sign").cpu().view(c + 1, n)
        null = scores[c]  # [L, n]
        raw = torch.ones(c, nl, dtype=torch.float64)
        for i in range(c):
            for li in range(nl):
                test = welch_t_test if self.test == "welch" else prediction_test
                raw[i, li] = test(scores[i, li], null[li])
        p_value = (raw * num_tests).clamp(max=1.0)
        accuracies = torch.stack([cavs.accuracies[layer][:c] for layer in cavs.layers], 1)  # [C, L, n]
        accuracy = accuracies.mean(2)
        return TCAVResult(
            concepts=list(cavs.concepts),
            layers=list(cavs.layers),
            target=target_index,
            statistic=self.statistic,
            test=self.test,
            score=scores[:c].mean(2),
            scores=scores[:c].clone(),
            score_std=scores[:c].std(2, unbiased=True),
            random_scores=null.unsqueeze(0).expand(c, nl, n).clone(),
            sign_count=signs[:c].mean(2),
            p_value=p_value,
            p_value_raw=raw,
            significant=p_value < self.alpha,
            accuracy=accuracy,
            accuracies=accuracies,
            separates=accuracy >= self.min_accuracy,
            num_tests=num_tests,
            alpha=self.alpha,
        )

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType,
        concepts: ExampleSource | Mapping[str, ExampleSource],
        random_sets: RandomSource,
        relative: Pairs | None = None,
    ) -> TCAVResult:
        """:meth:`fit` then :meth:`score`: TCAV of ``concepts`` (one example set, named
        ``"concept"``, or ``{name: examples}``) and of the ``relative`` pairs for class ``target``
        on ``inputs``. Always one :class:`TCAVResult`, whatever the number of concepts and layers."""
        return self.score(model, inputs, target, self.fit(model, concepts, random_sets, relative))
