"""TCAV at scale: time and peak memory of ours against captum's ``TCAV`` on the same workload, on CPU.

Workload (the same for both): torchvision ``resnet18`` (random init, eval, no download) at
``layer4``, target class 0; two concepts ("striped", "dotted") of ``--set-size`` images, ``--n-random``
random sets of ``--set-size`` images (smooth random colour fields), 50 class inputs, all
``--image-size`` square. Every image is generated on the fly by a map-style ``Dataset`` from its
index (nothing is held until a method reads it), so the peak memory measures the method.
Both sides train the same CAVs: each concept against each random set and random set ``i + 1``
against random set ``i`` (the null), and score the inputs along all of them.

* ours: ``TCAV("layer4", n_random=R)(model, inputs, 0, {"striped": ds, "dotted": ds}, [random sets])``
  (CAVs, statistics, p-values); random sets are read one at a time, each CAV problem is solved with
  its own ``N x N`` Gram matrix or in the primal (``concepts/cav.py``);
* captum: ``TCAV(model, ["layer4"], save_path=tmp).interpret(inputs, experimental_sets, target=0)``
  with its default classifier (scikit-learn ``SGDClassifier``); it writes every set's activations to
  ``save_path`` and reads two sets back per CAV.

Each side runs in its own fresh process (so ``ru_maxrss`` is that side's peak resident memory),
one after the other, with ``--threads`` torch threads. The full issue scale is ``--image-size 224
--n-random 50 --set-size 500``.

``--dissection`` measures Network Dissection instead: peak memory and time of the former layout
(dense ``[N, C, H, W]`` bool masks, float ``[b, K, H*W]`` counts) against the current one
(:class:`~lightning_xai.concepts.dissection.OwnedMasks`, chunked integer counts), 1k images x 50
concepts at 112x112 on resnet18's ``layer3``; both print the IoUs' sum (equal).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_concepts.py [--image-size 64] [--n-random 50] [--set-size 500] [--threads 1]
    .venv/bin/python benchmarks/bench_concepts.py --dissection
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

LAYER = "layer4"


class Generated(Dataset):
    """``count`` images of one kind, each generated from ``(seed, index)``: ``"random"`` (a smooth
    random colour field), ``"striped"`` (sine stripes, random frequency, angle and colours) or
    ``"dotted"`` (random dots)."""

    def __init__(self, kind: str, count: int, size: int, seed: int) -> None:
        self.kind, self.count, self.size, self.seed = kind, count, size, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        s = self.size
        base = F.interpolate(torch.rand(1, 3, 6, 6, generator=gen), size=(s, s), mode="bilinear")[0]
        if self.kind == "random":
            return base
        yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")
        if self.kind == "striped":
            angle, freq = float(torch.rand(1, generator=gen)) * math.pi, 4 + 8 * float(torch.rand(1, generator=gen))
            wave = torch.sin(2 * math.pi * freq * (xx * math.cos(angle) + yy * math.sin(angle))) > 0
            colour = torch.rand(3, 1, 1, generator=gen)
            return torch.where(wave, colour, 0.5 * base)
        centres = torch.rand(12, 2, generator=gen)
        dist = ((xx[None] - centres[:, 0, None, None]) ** 2 + (yy[None] - centres[:, 1, None, None]) ** 2).min(0).values
        return torch.where(dist < 0.004, torch.rand(3, 1, 1, generator=gen), base)


def workload(args: argparse.Namespace):
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    s, n = args.image_size, args.set_size
    concepts = {"striped": Generated("striped", n, s, 1), "dotted": Generated("dotted", n, s, 2)}
    randoms = [Generated("random", n, s, 100 + i) for i in range(args.n_random)]
    inputs = torch.stack([Generated("random", 50, s, 99)[i] for i in range(50)])
    return model, inputs, concepts, randoms


def run_ours(model, inputs, concepts, randoms, args):
    from lightning_xai.concepts import TCAV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = TCAV(LAYER, n_random=len(randoms), batch_size=64)(model, inputs, 0, concepts, randoms)
    return {c: (float(result[c].score), float(result[c].p_value)) for c in result.concepts}


def run_captum(model, inputs, concepts, randoms, args):
    from captum.concept import TCAV as CaptumTCAV
    from captum.concept import Concept

    named = [Concept(i, name, DataLoader(ds, batch_size=64)) for i, (name, ds) in enumerate(concepts.items())]
    rs = [Concept(10 + i, f"random_{i}", DataLoader(ds, batch_size=64)) for i, ds in enumerate(randoms)]
    r = len(rs)
    experimental_sets = [[c, x] for c in named for x in rs] + [[rs[(i + 1) % r], rs[i]] for i in range(r)]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tcav = CaptumTCAV(model, [LAYER], model_id="bench", save_path=tmp)
        out = tcav.interpret(inputs, experimental_sets, target=0)
    return {"cavs": len(out)}


def _dissection_workload(args: argparse.Namespace):
    """1k images (``--dissection-images``) of ``--dissection-size`` pixels in 50 concept sets
    (``--dissection-concepts``), each image with a random blob mask for its own concept, and
    resnet18's ``layer3`` (256 units)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    n, c, s = args.dissection_images, args.dissection_concepts, args.dissection_size
    images = torch.rand(n, 3, s, s)
    coarse = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    own = F.interpolate(coarse, size=(s, s), mode="bilinear")[:, 0] > 0.7
    owner = torch.arange(n) % c
    return model, images, own, owner


def _counts_before(dis, model, images, masks, thresholds):
    """The former ``NetworkDissection.counts``: dense float ``[b, K, H*W]`` and ``[b, C, H*W]`` per batch."""
    inter = unit_area = concept_area = None
    for part, act in dis._maps(model, images):
        mask = masks[part]
        up = F.interpolate(act, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        active = (up >= thresholds.view(1, -1, 1, 1)).flatten(2).float()
        concept = mask.flatten(2).float()
        batch = torch.einsum("bkp,bcp->kc", active, concept)
        if inter is None:
            inter, unit_area, concept_area = batch, active.sum((0, 2)), concept.sum((0, 2))
        else:
            inter, unit_area, concept_area = (
                inter + batch,
                unit_area + active.sum((0, 2)),
                concept_area + concept.sum((0, 2)),
            )
    return inter, unit_area, concept_area


def run_dissection(args: argparse.Namespace):
    """``before``: the former layout (dense ``[N, C, H, W]`` bool masks, dense float counts);
    ``after``: :class:`OwnedMasks` and the chunked integer counts."""
    from lightning_xai.concepts import NetworkDissection
    from lightning_xai.concepts.dissection import OwnedMasks

    model, images, own, owner = _dissection_workload(args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    dis = NetworkDissection("layer3", batch_size=64)
    masks = OwnedMasks(own, owner, args.dissection_concepts)
    if args.side == "dissection-before":
        masks = masks.dense()
        del own
        thresholds = dis.thresholds(model, images)
        counts = _counts_before(dis, model, images, masks, thresholds)
    else:
        thresholds = dis.thresholds(model, images)
        counts = dis.counts(model, images, masks, thresholds)
    iou = NetworkDissection.iou(*counts)
    return before, time.perf_counter() - start, {"iou_sum": float(iou.double().sum()), "max_iou": float(iou.max())}


def child(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    if args.side.startswith("dissection"):
        before, seconds, summary = run_dissection(args)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            json.dumps(
                {
                    "side": args.side,
                    "seconds": seconds,
                    "peak_rss_mb": peak,
                    "rss_before_mb": before,
                    "summary": summary,
                }
            )
        )
        return
    model, inputs, concepts, randoms = workload(args)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    fn = run_ours if args.side == "ours" else run_captum
    start = time.perf_counter()
    summary = fn(model, inputs, concepts, randoms, args)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"side": args.side, "seconds": seconds, "peak_rss_mb": peak, "rss_before_mb": before, "summary": summary}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--n-random", type=int, default=50)
    parser.add_argument("--set-size", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sides", default="ours,captum")
    parser.add_argument("--dissection", action="store_true", help="benchmark Network Dissection's memory instead")
    parser.add_argument("--dissection-images", type=int, default=1000)
    parser.add_argument("--dissection-concepts", type=int, default=50)
    parser.add_argument("--dissection-size", type=int, default=112)
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    if args.dissection:
        n, c, s = args.dissection_images, args.dissection_concepts, args.dissection_size
        print(
            f"Network Dissection: resnet18 (random init) layer3, {n} images {s}x{s} in {c} concept sets, "
            f"{args.threads} torch thread(s), each side in its own process"
        )
        for side in ("dissection-before", "dissection-after"):
            cmd = [sys.executable, __file__, "--side", side, "--threads", str(args.threads)]
            cmd += ["--dissection-images", str(n), "--dissection-concepts", str(c), "--dissection-size", str(s)]
            print(
                subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1],
                flush=True,
            )
        return
    s, r, n = args.image_size, args.n_random, args.set_size
    images = (2 + r) * n + 50
    print(
        f"workload: resnet18 (random init) at {LAYER}, {s}x{s} images, 2 concepts + {r} random sets x {n} images "
        f"({images} images), 50 inputs, {2 * r + r} CAVs; {args.threads} torch thread(s), each side in its own process"
    )
    rows = {}
    for side in args.sides.split(","):
        cmd = [sys.executable, __file__, "--side", side, "--image-size", str(s), "--n-random", str(r)]
        cmd += ["--set-size", str(n), "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows[side] = json.loads(out)
        print(json.dumps(rows[side]), flush=True)
    print(f"{'':8s}{'seconds':>10s}{'peak RSS MB':>14s}{'RSS before MB':>15s}")
    for side, row in rows.items():
        print(f"{side:8s}{row['seconds']:10.1f}{row['peak_rss_mb']:14.0f}{row['rss_before_mb']:15.0f}")
    if len(rows) == 2:
        print(
            f"ratio ours/captum: time {rows['ours']['seconds'] / rows['captum']['seconds']:.2f}, "
            f"peak RSS {rows['ours']['peak_rss_mb'] / rows['captum']['peak_rss_mb']:.2f}"
        )


if __name__ == "__main__":
    main()
