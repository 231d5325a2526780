"""Speed of the perturbation and surrogate explainers, on CPU.

Against captum, same weights, inputs, targets and configuration:

* ``Occlusion`` vs captum ``Occlusion`` (same window and stride, captum given the same number of
  occluded inputs per forward pass as ours);
* ``LIME`` vs captum ``Lime`` with ``SkLearnRidge(alpha=1)``, LIME's kernel and *the same*
  superpixels and coalitions (replayed into captum), ``perturbations_per_eval`` = our chunk;
* ``KernelSHAP`` vs captum ``KernelShap`` on the same superpixels and coalitions (captum's full and
  empty coalitions first), same batching.

For LIME and Kernel SHAP a second row adds our scikit-image segmentation to our time (captum is
handed the segments). Ratios are ours / captum (median over interleaved rounds, quartiles of the
per-round ratio in brackets); target <= 1.0, and well below for LIME / Kernel SHAP.

* ``ExtremalPerturbation`` vs TorchRay's ``extremal_perturbation`` (if ``torchray`` is installed):
  the same model, images, targets, 2 areas and iterations; TorchRay takes one image per call (a
  loop over the batch), ours the whole batch. ``match``: the largest mask difference.

``RISE`` and ``ExtremalPerturbation`` are also reported in passes: the method's count (RISE:
``n_masks`` forwards per image; extremal: ``n_iter * len(areas)`` forward + backward passes) and
the measured time in those units (RISE: one image's forward pass, timed as a forward pass of 256
images / 256; extremal: one forward + backward pass of the batch).

Workloads: ``linear`` (a single linear layer on 4 RGB 32x32 shapes images: the explainers' own
overhead dominates), ``small`` (SmallCNN on 4 grey 28x28 images: the model's forward passes
dominate), ``vgg`` (VGGish on 4 RGB 32x40).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_perturbation.py [--quick] [--workload linear|small|vgg|all] [--only all|extremal] [--json PATH]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from lightning_xai import attribution as xai  # noqa: E402
from lightning_xai.data import ShapesDataset  # noqa: E402
from tests.helpers.models import SmallCNN, VGGish, randomize_batchnorm  # noqa: E402

THREADS = 1  # one thread: on a shared, oversubscribed CPU two threads wait on each other
N_SAMPLES = 200
RISE_MASKS = 500
EXTREMAL_ITERS = 50


def make_workload(name: str) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    if name == "small":  # grey 28x28 shapes, SmallCNN: the model's forward passes dominate
        model = SmallCNN(1, 10)
        x = ShapesDataset(num_samples=4, image_size=28, seed=1).images.mean(1, keepdim=True)
    elif name == "vgg":  # RGB 32x40, VGGish
        model = VGGish(3, 10)
        x = torch.nn.functional.interpolate(ShapesDataset(num_samples=4, image_size=32, seed=1).images, size=(32, 40))
    elif name == "linear":  # RGB 32x32, one linear layer: the explainers' own overhead dominates
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        x = ShapesDataset(num_samples=4, image_size=32, seed=1).images
    else:
        raise ValueError(name)
    randomize_batchnorm(model, 0)
    model.eval()
    target = torch.arange(x.shape[0]) % 10
    return model, x, target


def timed_rounds(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Interleaved rounds, rotating order; seconds per call."""
    names = list(calls)
    for _ in range(warmup):
        for n in names:
            calls[n]()
    out: dict[str, list[float]] = {n: [] for n in names}
    gc.disable()
    try:
        for r in range(rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for n in order:
                t = time.perf_counter()
                calls[n]()
                out[n].append(time.perf_counter() - t)
    finally:
        gc.enable()
    return out


def ratio_row(label: str, oracle: str, samples: dict[str, list[float]], ours: str, theirs: str) -> dict[str, Any]:
    a, b = samples[ours], samples[theirs]
    ratios = sorted(x / y for x, y in zip(a, b))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {
        "method": label,
        "oracle": oracle,
        "ours_ms": 1e3 * statistics.median(a),
        "oracle_ms": 1e3 * statistics.median(b),
        "ratio": statistics.median(a) / statistics.median(b),
        "iqr": (q[0], q[2]),
    }


def lime_similarity(width: float) -> Callable[..., Tensor]:
    def similarity(original: Tensor, perturbed: Tensor, interpretable: Tensor, **kwargs: Any) -> Tensor:
        return xai.surrogate.lime_kernel(interpretable, width)

    return similarity


def replay(per_image: list[Tensor], prefix: list[Tensor]) -> Callable[..., Any]:
    """captum perturb_func replaying our coalitions; one fresh pass per example (captum loops
    over the batch, calling the generator function once per example)."""
    state = {"i": 0}

    def generator(original: Tensor, **kwargs: Any) -> Any:
        rows = per_image[state["i"] % len(per_image)]
        state["i"] += 1
        for row in prefix:
            yield row
        for row in rows:
            yield row[None]

    return generator


def extremal_rows(workload: str, rounds: int) -> list[dict[str, Any]]:
    """Ours vs TorchRay on the same workload (2 areas, EXTREMAL_ITERS iterations), and ours in passes."""
    model, x, target = make_workload(workload)
    rows: list[dict[str, Any]] = []
    areas = [0.1, 0.3]
    step, sigma = 4, 8.0  # the defaults (7, 21) are for 224-pixel images
    ext = xai.ExtremalPerturbation(areas=areas, n_iter=EXTREMAL_ITERS, step=step, sigma=sigma)
    try:
        import warnings

        from torchray.attribution.extremal_perturbation import extremal_perturbation

        warnings.filterwarnings("ignore", message="torch.meshgrid")

        def theirs() -> Tensor:
            out = [
                extremal_perturbation(
                    model, x[i : i + 1], int(target[i]), areas=areas, max_iter=EXTREMAL_ITERS, step=step, sigma=sigma
                )[0]
                for i in range(x.shape[0])
            ]
            for p in model.parameters():  # TorchRay switches them off and leaves them so
                p.requires_grad_(True)
            return torch.stack(out)[:, :, 0]

        match = float((ext.masks(model, x, target) - theirs()).abs().max())
        s = timed_rounds({"ours": lambda: ext.masks(model, x, target), "torchray": theirs}, rounds)
        row = ratio_row(f"ExtremalPerturbation {EXTREMAL_ITERS} iters, 2 areas", "torchray", s, "ours", "torchray")
        row["match"] = match
        rows.append(row)
    except ImportError:
        print("torchray is not installed: no oracle row for ExtremalPerturbation")

    def pass_unit() -> None:  # one forward + backward pass of the batch w.r.t. its input
        leaf = x.clone().requires_grad_(True)
        torch.autograd.grad(model(leaf).gather(1, target[:, None]).sum(), leaf)

    s = timed_rounds({"pass": pass_unit, "extremal": lambda: ext(model, x, target)}, max(2, rounds // 2))
    rows.append(
        {
            "method": f"ExtremalPerturbation {EXTREMAL_ITERS} iters, 2 areas",
            "ours_ms": 1e3 * statistics.median(s["extremal"]),
            "count": f"{EXTREMAL_ITERS * len(areas)} forward+backward passes of the batch, in {EXTREMAL_ITERS} passes "
            f"of {len(areas)} x the batch",
            "measured": f"{statistics.median(s['extremal']) / statistics.median(s['pass']):.0f} forward+backward "
            "passes of the batch",
        }
    )
    return rows


def run(workload: str, rounds: int, only: str = "all") -> list[dict[str, Any]]:
    if only == "extremal":
        return extremal_rows(workload, rounds)
    from captum._utils.models.linear_model import SkLearnRidge
    from captum.attr import KernelShap, Lime
    from captum.attr import Occlusion as CaptumOcclusion

    model, x, target = make_workload(workload)
    batch, channels = x.shape[:2]
    rows: list[dict[str, Any]] = []

    # ---- occlusion
    occ = xai.Occlusion(window=(4, 4), stride=(2, 2))
    chunk = xai.sampling.default_chunk_size(x)
    per_eval = max(1, chunk // batch)
    captum_occ = CaptumOcclusion(model)
    ours = occ(model, x, target)
    ref = captum_occ.attribute(
        x,
        sliding_window_shapes=(channels, 4, 4),
        strides=(channels, 2, 2),
        target=target,
        perturbations_per_eval=per_eval,
    )
    match = float((ours - ref).abs().max() / ref.abs().max())
    s = timed_rounds(
        {
            "ours": lambda: occ(model, x, target),
            "captum": lambda: captum_occ.attribute(
                x,
                sliding_window_shapes=(channels, 4, 4),
                strides=(channels, 2, 2),
                target=target,
                perturbations_per_eval=per_eval,
            ),
        },
        rounds,
    )
    row = ratio_row("Occlusion 4x4 stride 2", f"captum Occlusion ppe={per_eval}", s, "ours", "captum")
    row["match"] = match
    rows.append(row)

    # ---- LIME and Kernel SHAP on the same superpixels and coalitions
    seg_kwargs = {"n_segments": 40}
    lime = xai.LIME(n_samples=N_SAMPLES, segmentation="slic", segmentation_kwargs=seg_kwargs)
    shap = xai.KernelSHAP(n_samples=N_SAMPLES, segmentation="slic", segmentation_kwargs=seg_kwargs)
    segments = lime.segments(x)
    counts = (segments.flatten(1).amax(1) + 1).tolist()
    lime_z = [lime.sample(k)[0] for k in counts]
    shap_z = [shap.sample(k)[0] for k in counts]
    per_eval_s = max(1, min(N_SAMPLES, chunk))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, ours_exp, zs, oracle_cls in (
            ("LIME", lime, lime_z, "Lime"),
            ("KernelSHAP", shap, shap_z, "KernelShap"),
        ):

            def captum_call(zs: list[Tensor] = zs, oracle_cls: str = oracle_cls) -> Tensor:
                outs = []
                for b in range(batch):  # one example at a time: each has its own superpixel count
                    k = counts[b]
                    if oracle_cls == "Lime":
                        oracle = Lime(
                            model,
                            interpretable_model=SkLearnRidge(alpha=1.0),
                            similarity_func=lime_similarity(0.25),
                            perturb_func=replay([zs[b]], []),
                        )
                        n = zs[b].shape[0]
                    else:
                        oracle = KernelShap(model)
                        oracle.perturb_func = replay(
                            [zs[b]], [torch.ones(1, k, dtype=torch.long), torch.zeros(1, k, dtype=torch.long)]
                        )
                        n = zs[b].shape[0] + 2
                    outs.append(
                        oracle.attribute(
                            x[b : b + 1],
                            target=int(target[b]),
                            feature_mask=segments[b : b + 1, None],
                            n_samples=n,
                            perturbations_per_eval=per_eval_s,
                        )
                    )
                return torch.cat(outs)

            ours_map = ours_exp.attribute(model, x, target, segments=segments, samples=zs)
            ref = captum_call()
            match = float((ours_map - ref).abs().max() / ref.abs().max())
            s = timed_rounds(
                {
                    "ours": lambda e=ours_exp, zs=zs: e.attribute(model, x, target, segments=segments, samples=zs),
                    "ours+seg": lambda e=ours_exp, zs=zs: e.attribute(model, x, target, samples=zs),
                    "captum": captum_call,
                },
                rounds,
            )
            oracle_name = f"captum {oracle_cls} ppe={per_eval_s}"
            row = ratio_row(f"{name} {N_SAMPLES} samples", oracle_name, s, "ours", "captum")
            row["match"] = match
            rows.append(row)
            row = ratio_row(f"{name} {N_SAMPLES} samples + our SLIC", oracle_name, s, "ours+seg", "captum")
            row["match"] = match
            rows.append(row)

    # ---- forward passes per image
    rep = x.repeat((256 + batch - 1) // batch, 1, 1, 1)[:256]
    rise = xai.RISE(n_masks=RISE_MASKS, cell_size=7 if workload == "small" else 8)

    def forward_unit() -> None:
        with torch.no_grad():
            model(rep)

    s = timed_rounds(
        {
            "unit": forward_unit,
            "rise": lambda: rise(model, x, target),
        },
        max(2, rounds // 2),
    )
    forward = statistics.median(s["unit"]) / 256
    rows.append(
        {
            "method": f"RISE {RISE_MASKS} masks",
            "ours_ms": 1e3 * statistics.median(s["rise"]),
            "count": f"{RISE_MASKS} forwards per image",
            "measured": f"{statistics.median(s['rise']) / batch / forward:.0f} one-image forwards (batched) per image",
        }
    )
    rows.extend(extremal_rows(workload, rounds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds per row instead of 7")
    parser.add_argument("--workload", default="all", choices=["small", "vgg", "linear", "all"])
    parser.add_argument("--only", default="all", choices=["all", "extremal"], help="extremal: only its rows")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rounds = 3 if args.quick else 7
    results = {}
    for name in ["linear", "small"] if args.workload == "all" else [args.workload]:
        model, x, _ = make_workload(name)
        print(f"\n**{name}: {type(model).__name__} on {'x'.join(map(str, x.shape))}, {THREADS} threads**\n")
        rows = run(name, rounds, args.only)
        results[name] = rows
        print("| method | ours (ms) | oracle (ms) | oracle | ratio ours/oracle [IQR] | match |")
        print("|---|---:|---:|---|---:|---:|")
        for r in rows:
            if "ratio" in r:
                flag = " (!)" if r["ratio"] > 1.0 else ""
                print(
                    f"| {r['method']} | {r['ours_ms']:.1f} | {r['oracle_ms']:.1f} | {r['oracle']} | "
                    f"{r['ratio']:.2f} [{r['iqr'][0]:.2f}-{r['iqr'][1]:.2f}]{flag} | {r['match']:.1e} |"
                )
        print("\n| method | ours (ms) | cost by definition | measured cost |")
        print("|---|---:|---|---|")
        for r in rows:
            if "measured" in r:
                print(f"| {r['method']} | {r['ours_ms']:.1f} | {r['count']} | {r['measured']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
