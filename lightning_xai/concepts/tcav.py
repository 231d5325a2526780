"""Testing with Concept Activation Vectors (Kim et al. 2018), with the paper's significance test.

For each concept and layer, :class:`TCAV` trains ``n_random`` CAVs of the concept against
``n_random`` random sets, and ``n_random`` CAVs of random against random (set ``i + 1`` against
set ``i``, cyclically: each null CAV has its own random "concept"): the null distribution. The TCAV score of class ``k`` along each CAV is the
fraction of the inputs whose directional derivative is positive. A two-sided t-test compares
the concept's ``n_random`` scores with the null scores, and a Bonferroni correction over the
concept x layer tests of one call decides :attr:`TCAVResult.significant`. The default test
(``test="prediction"``) asks whether the concept's mean score could be one more random-vs-random
score; ``test="welch"`` is the paper's two-sample t-test, which is anti-conservative (see
:class:`TCAV`). An insignificant score
is reported as such (``significant=False``), never dropped.

Cost: one forward pass over all concept and random examples for all layers (in batches of
``batch_size``), and one forward plus one backward pass over the inputs for all concepts, layers
and CAVs together; every CAV of a layer is trained in one batched L-BFGS problem on the model's
device.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

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
from lightning_xai.concepts.examples import ExampleSource, load_examples, sample_examples
from lightning_xai.concepts.functional import (
    layer_activations,
    layer_gradients,
    prediction_test,
    tcav_score,
    welch_t_test,
)

__all__ = ["TCAV", "TCAVResult", "FittedCAVs", "RandomSource", "TESTS"]

TESTS: tuple[str, ...] = ("welch", "prediction")
"""The significance tests :class:`TCAV` offers (see its ``test`` argument)."""

RandomSource = Union[Sequence[ExampleSource], Tensor, Dataset, DataLoader]
"""Random counter-examples: a list of ``n_random`` (or more) example sets, or one pool (a tensor,
``Dataset`` or ``DataLoader``'s dataset) from which :class:`TCAV` draws ``n_random`` disjoint sets."""


@dataclass(eq=False)
class TCAVResult:
    """The TCAV score of one concept for one class at one layer, with its significance.

    Attributes:
        concept: Name of the concept.
        layer: Dotted name of the layer.
        target: The class index (``None`` when the call explained each input's prediction).
        score: Mean of :attr:`scores`.
        scores: ``[n_random]`` TCAV scores along the CAVs against each random set.
        random_scores: ``[n_random]`` TCAV scores along the random-vs-random CAVs (the null).
        score_std: Standard deviation of :attr:`scores` (error bars).
        p_value: Bonferroni-corrected two-sided p-value (``min(1, raw * num_tests)``).
        p_value_raw: The t-test's p-value before correction.
        significant: ``p_value < alpha``.
        accuracy: Mean held-out accuracy of the concept's CAVs.
        accuracies: ``[n_random]`` held-out accuracies.
        separates: ``accuracy >= min_accuracy`` of the :class:`TCAV` (``False``: near chance).
        num_tests: The number of concept x layer tests in the correction.
        alpha: The significance level.
        magnitude: Whether scores are the magnitude variant.
    """

    concept: str
    layer: str
    target: int | None
    score: float
    scores: Tensor
    random_scores: Tensor
    score_std: float
    p_value: float
    p_value_raw: float
    significant: bool
    accuracy: float
    accuracies: Tensor
    separates: bool
    num_tests: int
    alpha: float
    magnitude: bool = False

    def __repr__(self) -> str:
        flag = "significant" if self.significant else "not significant"
        return (
            f"TCAVResult(concept={self.concept!r}, layer={self.layer!r}, target={self.target}, "
            f"score={self.score:.3f}+-{self.score_std:.3f}, p={self.p_value:.3g} ({flag}), accuracy={self.accuracy:.2f})"
        )


@dataclass(eq=False)
class FittedCAVs:
    """Every CAV of one :meth:`TCAV.fit` call.

    Attributes:
        concepts: Concept names, in order.
        layers: Layer names, in order.
        n_random: Number of random sets.
        vectors: ``{layer: [C + 1, n_random, D]}`` unit CAVs; row ``C`` holds the random-vs-random
            CAVs (random set ``i + 1`` against set ``i``).
        accuracies: ``{layer: [C + 1, n_random]}`` held-out accuracies.
        classifier: The classifier they were trained with.
        min_accuracy: The separation threshold of the :class:`TCAV` that fitted them.
    """

    concepts: list[str]
    layers: list[str]
    n_random: int
    vectors: dict[str, Tensor]
    accuracies: dict[str, Tensor]
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


class TCAV:
    """TCAV scores of concepts for a class, with the paper's significance test.

    Holds configuration only; the model comes at call time. Called as
    ``tcav(model, inputs, target, concept, random_sets)``: ``inputs`` are examples of the class
    ``target`` (the paper scores a class on its own images).

    Args:
        layers: One dotted layer name or several.
        n_random: Number of random sets (CAVs per concept and layer), at least 2.
        alpha: Significance level of the Bonferroni-corrected two-sided t-test.
        classifier: ``"logistic"`` or ``"svm"`` (see :class:`~lightning_xai.concepts.CAV`).
        test_fraction: Held-out fraction of each set for the CAV accuracies.
        regularization: L2 strength of the CAV classifiers.
        random_size: Examples per random set drawn from a pool (default: the largest concept set).
        batch_size: Forward at most this many examples at once.
        seed: Seed of the splits and of the random sets drawn from a pool.
        magnitude: Score with the magnitude variant instead of the sign count.
        min_accuracy: A concept whose CAVs' mean held-out accuracy is below this is warned about
            and marked ``separates=False``.
        test: ``"prediction"`` (default): a t-test of the concept's mean score against the spread
            of single random-vs-random scores (:func:`~lightning_xai.concepts.functional.prediction_test`);
            ``"welch"``: the paper's two-sample t-test of the concept's scores against the random
            ones (:func:`~lightning_xai.concepts.functional.welch_t_test`). All of a concept's CAVs
            share its one example set, so its scores vary less than random ones whose positive set
            changes run to run; the two-sample test ignores this and flags random "concepts" far
            more often than ``alpha`` (5 of 20 random concepts at ``alpha=0.05`` in the test
            suite, 9 of 40 in a longer run, against 0 for ``"prediction"``).
        output: Where the ``[B, C]`` scores are when the model returns a tuple, dict or dataclass
            (see :func:`~lightning_xai.attribution.base.select_output`).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Example:
        >>> from torch import nn
        >>> torch.manual_seed(0) and None
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> concept, pool = torch.randn(10, 4) + 2.0, torch.randn(60, 4)
        >>> result = TCAV("1", n_random=3)(model, torch.randn(6, 4), 0, concept, pool)
        >>> 0.0 <= result.score <= 1.0, result.scores.shape
        (True, torch.Size([3]))
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
        magnitude: bool = False,
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
        if not isinstance(magnitude, bool):
            raise TypeError(f"Expected argument `magnitude` to be a bool, but got {magnitude!r}.")
        self.magnitude = magnitude
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
    def random_sets(self, random_sets: RandomSource, size: int) -> list[Tensor]:
        """The ``n_random`` random sets: the first ``n_random`` of a list, or drawn from a pool.

        Raises:
            ValueError: a list with fewer than ``n_random`` sets, or a set that is too small.
        """
        if isinstance(random_sets, (list, tuple)):
            if len(random_sets) < self.n_random:
                raise ValueError(
                    f"TCAV: expected at least n_random={self.n_random} random sets, but got {len(random_sets)}."
                )
            sets = [load_examples(s, name=f"random {i}") for i, s in enumerate(random_sets[: self.n_random])]
        else:
            pool = random_sets.dataset if isinstance(random_sets, DataLoader) else random_sets
            if not isinstance(pool, (Tensor, Dataset)):
                raise TypeError(
                    "TCAV: expected `random_sets` to be a list of example sets, a tensor, a Dataset or a DataLoader, "
                    f"but got {type(random_sets).__name__}."
                )
            sets = sample_examples(pool, self.n_random, self.random_size or size, seed=self.seed, name="random")
        for i, s in enumerate(sets):
            check_set_size(s.shape[0], f"random {i}", "TCAV")
        return sets

    def fit(
        self,
        model: nn.Module,
        concepts: ExampleSource | Mapping[str, ExampleSource],
        random_sets: RandomSource,
    ) -> FittedCAVs:
        """Train every CAV: each concept against each random set, and random against random, at
        every layer, from one forward pass over all the examples.

        Args:
            model: The model.
            concepts: One example set, or ``{name: examples}`` for several concepts.
            random_sets: A list of at least ``n_random`` example sets, or one pool to draw from.

        Returns:
            The :class:`FittedCAVs`.

        Raises:
            ValueError: too few examples, shapes that differ or do not fit the model, an unknown layer.

        Warns:
            UserWarning: a concept's CAVs separate it from random at near-chance accuracy.
        """
        self.check(model)
        named = _as_concepts(concepts)
        sets = {name: load_examples(source, name=name) for name, source in named.items()}
        for name, examples in sets.items():
            check_set_size(examples.shape[0], name, "TCAV")
        randoms = self.random_sets(random_sets, max(s.shape[0] for s in sets.values()))
        shapes = {name: tuple(s.shape[1:]) for name, s in sets.items()}
        shapes.update({f"random {i}": tuple(s.shape[1:]) for i, s in enumerate(randoms)})
        if len(set(shapes.values())) > 1:
            raise ValueError(f"TCAV: the example sets have different shapes: {shapes}.")
        all_sets = [*sets.values(), *randoms]
        device = all_sets[0].device
        acts = layer_activations(
            model,
            torch.cat([s.to(device) for s in all_sets]),
            self.layers,
            batch_size=self.batch_size,
            method="TCAV",
            what="the concept and random examples",
        )
        gen = torch.Generator().manual_seed(self.seed)
        splits = [(split_indices(s.shape[0], self.test_fraction, gen)) for s in all_sets]
        bounds = torch.tensor([0] + [s.shape[0] for s in all_sets]).cumsum(0).tolist()
        c, n = len(sets), self.n_random
        pairs_index = [(i, c + r) for i in range(c) for r in range(n)] + [(c + (r + 1) % n, c + r) for r in range(n)]
        vectors, accuracies = {}, {}
        for layer in self.layers:
            rows = torch.arange(bounds[-1], device=acts[layer].device)
            parts = [rows[bounds[i] : bounds[i + 1]] for i in range(len(all_sets))]
            v, _, acc = fit_cavs(
                acts[layer],
                [(parts[p], parts[q]) for p, q in pairs_index],
                [(splits[p], splits[q]) for p, q in pairs_index],
                classifier=self.classifier,
                regularization=self.regularization,
            )
            vectors[layer] = v.view(c + 1, n, -1)
            accuracies[layer] = acc.view(c + 1, n).cpu()
        fitted = FittedCAVs(
            concepts=list(sets),
            layers=list(self.layers),
            n_random=n,
            vectors=vectors,
            accuracies=accuracies,
            classifier=self.classifier,
            min_accuracy=self.min_accuracy,
            example_shape=tuple(all_sets[0].shape[1:]),
        )
        for name in fitted.concepts:
            for layer in self.layers:
                acc = fitted.mean_accuracy(name, layer)
                if acc < self.min_accuracy:
                    warn_near_chance(name, layer, acc, self.min_accuracy, method="TCAV")
        return fitted

    # -- scores -------------------------------------------------------------------------------
    def score(
        self, model: nn.Module, inputs: Tensor, target: TargetType, cavs: FittedCAVs
    ) -> dict[tuple[str, str], TCAVResult]:
        """TCAV scores and significance of every concept x layer of ``cavs`` for ``target``.

        One forward and one backward pass over ``inputs`` (in batches of ``batch_size``).

        Args:
            model: The model the CAVs were fitted on.
            inputs: ``[B, ...]`` examples of the class.
            target: The class index (``int``), ``[B]`` indices, or ``None`` for each input's prediction.
            cavs: The output of :meth:`fit`.

        Returns:
            ``{(concept, layer): TCAVResult}``.

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
        c, n = len(cavs.concepts), cavs.n_random
        num_tests = c * len(cavs.layers)
        results: dict[tuple[str, str], TCAVResult] = {}
        for layer in cavs.layers:
            vectors = cavs.vectors[layer].reshape((c + 1) * n, -1)
            derivatives = grads[layer] @ vectors.to(grads[layer].dtype).T
            scores = torch.as_tensor(tcav_score(derivatives, magnitude=self.magnitude)).view(c + 1, n).cpu()
            null = scores[c]
            for i, concept in enumerate(cavs.concepts):
                raw = welch_t_test(scores[i], null) if self.test == "welch" else prediction_test(scores[i], null)
                p_value = min(1.0, raw * num_tests)
                accuracies = cavs.accuracies[layer][i]
                accuracy = float(accuracies.mean())
                results[(concept, layer)] = TCAVResult(
                    concept=concept,
                    layer=layer,
                    target=target_index,
                    score=float(scores[i].mean()),
                    scores=scores[i].clone(),
                    random_scores=null.clone(),
                    score_std=float(scores[i].std(unbiased=True)),
                    p_value=p_value,
                    p_value_raw=raw,
                    significant=bool(p_value < self.alpha),
                    accuracy=accuracy,
                    accuracies=accuracies.clone(),
                    separates=bool(accuracy >= self.min_accuracy),
                    num_tests=num_tests,
                    alpha=self.alpha,
                    magnitude=self.magnitude,
                )
        return results

    def interpret(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType,
        concepts: ExampleSource | Mapping[str, ExampleSource],
        random_sets: RandomSource,
    ) -> dict[tuple[str, str], TCAVResult]:
        """:meth:`fit` then :meth:`score`: ``{(concept, layer): TCAVResult}``."""
        return self.score(model, inputs, target, self.fit(model, concepts, random_sets))

    def __call__(
        self,
        model: nn.Module,
        inputs: Tensor,
        target: TargetType,
        concept: ExampleSource | Mapping[str, ExampleSource],
        random_sets: RandomSource,
    ) -> TCAVResult | dict[tuple[str, str], TCAVResult]:
        """TCAV of ``concept`` for class ``target`` on ``inputs``.

        Returns:
            One :class:`TCAVResult` for one concept (not a mapping) and one layer; otherwise
            ``{(concept, layer): TCAVResult}`` as :meth:`interpret`.
        """
        results = self.interpret(model, inputs, target, concept, random_sets)
        if not isinstance(concept, Mapping) and len(self.layers) == 1:
            return next(iter(results.values()))
        return results
