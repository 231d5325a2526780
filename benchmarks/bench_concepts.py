"""Speed of CAV + TCAV against captum's ``TCAV`` on the same workload, on CPU.

Workload (the same for both): the demo's ``ShapesClassifier`` (width 16, eval, random init) on
32 x 32 RGB shapes; 2 concepts x 50 images (``concept_sets``: "circle" and "marker_square"), 5
random sets of 50 images, 50 class inputs, layer ``features.7``, target class 0. Both sides train
the same 15 CAVs: each concept against each random set, and one random set against the other
random sets (captum needs these "random vs random" experimental sets for the paper's significance
test too; ours trains them as part of every call), and score the inputs along all of them.

* ours: ``TCAV("features.7", n_random=5)(model, inputs, 0, {"circle": ..., "marker": ...}, randoms)``:
  CAVs, scores, p-values, significance;
* captum: ``TCAV(model, ["features.7"], save_path=fresh_dir).interpret(inputs, experimental_sets,
  target=0)`` with its default classifier (scikit-learn ``SGDClassifier``); a fresh ``save_path``
  each round, since captum otherwise loads the activations and CAVs saved by the previous round.

Rounds alternate (ours, captum, captum, ours, ...) after one warm-up each; medians are printed with
the ratio ours/captum (target <= 0.5).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_concepts.py [--rounds 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lightning_xai.concepts import TCAV  # noqa: E402
from lightning_xai.data import concept_sets, random_images  # noqa: E402
from lightning_xai.demo import ShapesClassifier  # noqa: E402

LAYER = "features.7"


def workload() -> tuple[torch.nn.Module, torch.Tensor, dict[str, torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(0)
    model = ShapesClassifier(num_classes=4, width=16).eval()
    sets = concept_sets(50, image_size=32, num_classes=4, concepts=["circle", "marker_square"])
    concepts = {name: s.images for name, s in sets.items()}
    pool = random_images(300, image_size=32, num_classes=4, seed=3)
    randoms = [pool[i * 50 : (i + 1) * 50] for i in range(5)]
    inputs = pool[250:300]
    return model, inputs, concepts, randoms


def ours(model, inputs, concepts, randoms):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TCAV(LAYER, n_random=5, batch_size=None)(model, inputs, 0, concepts, randoms)


def captum(model, inputs, concepts, randoms):
    from captum.concept import TCAV as CaptumTCAV
    from captum.concept import Concept

    random.seed(0)
    named = [Concept(i, name, DataLoader(x, batch_size=50)) for i, (name, x) in enumerate(concepts.items())]
    rs = [Concept(10 + i, f"random_{i}", DataLoader(r, batch_size=50)) for i, r in enumerate(randoms)]
    experimental_sets = [[c, r] for c in named for r in rs] + [[rs[0], r] for r in rs[1:]] + [[rs[1], rs[0]]]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tcav = CaptumTCAV(model, [LAYER], model_id="bench", save_path=tmp)
        return tcav.interpret(inputs, experimental_sets, target=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, inputs, concepts, randoms = workload()
    ours(model, inputs, concepts, randoms)
    captum(model, inputs, concepts, randoms)
    times: dict[str, list[float]] = {"ours": [], "captum": []}
    order = ["ours", "captum"]
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            fn = ours if name == "ours" else captum
            start = time.perf_counter()
            fn(model, inputs, concepts, randoms)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = ours(model, inputs, concepts, randoms)
    print(
        f"workload: ShapesClassifier(width=16) at {LAYER}, 2 concepts x 50 images, 5 random sets x 50, 50 inputs, "
        f"{args.threads} thread(s), {args.rounds} rounds"
    )
    print(f"{'':10s}{'median s':>10s}{'min s':>10s}")
    for k, v in times.items():
        print(f"{k:10s}{med[k]:10.3f}{min(v):10.3f}")
    print(f"ratio ours/captum: {med['ours'] / med['captum']:.3f} (target <= 0.5)")
    for (concept, _layer), r in result.items():
        print(
            f"  {concept:15s} score {r.score:.2f} +- {r.score_std:.2f}  p={r.p_value:.3g}  significant={r.significant}  cav acc {r.accuracy:.2f}"
        )


if __name__ == "__main__":
    main()
