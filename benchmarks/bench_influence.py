"""TracIn self-influence: lightning_xai against captum on the same workload, on CPU.

Workload: ``tests.helpers.models.SmallCNN(1, 10)`` (conv/BatchNorm/conv + linear head, eval mode)
on ``1024 x 1 x 16 x 16`` examples with integer labels, 3 checkpoints saved as files (the same
files for everyone, each with its learning rate), cross-entropy; self-influence of all 1024
examples summed over the checkpoints, batches of 64.

Rows (each run in its own fresh process, one intra-op thread, after a warm-up call on 64 examples
so one-time costs -- torch.func's first use, captum's imports -- are not timed):

* ``unit``: one forward + backward of the full set w.r.t. all parameters (batched, summed loss):
  the cost unit, so every time is also given in "full-set passes".
* ``ours``: ``TracIn().self_influence`` (every parameter, BatchNorm's included).
* ``captum per-example``: ``TracInCP(sample_wise_grads_per_batch=False)``, the mode that counts
  every parameter as ours does (same numbers; checked). About 20 times slower than the rest: run
  in the first round only.
* ``captum batched``: ``TracInCP(sample_wise_grads_per_batch=True)``, captum's fast mode, which
  sees only Conv2d and Linear parameters (BatchNorm's are silently left out: not the same numbers).
* ``ours last layer`` / ``captum TracInCPFast``: the last-layer form (bias-free head, weight only).
* ``ours projected``: ``TracIn(projection_dim=128)``.

Memory: the peak resident set size (``ru_maxrss``) reached during the timed call, minus the
resident set size just before it. (``tracemalloc`` sees only Python's allocator, not torch's CPU
tensors, so RSS is the honest figure here.)

Monitor cost (rows ``fit_*``): the demo CNN (``ShapesClassifier(width=8)``, Adam) fitted for 3 epochs
on 2,048 shapes images (32x32, no validation) without and with ``TracInMonitor`` (a checkpoint
every epoch: the whole training set streamed, per-example gradients, pictures logged to
TensorBoard); the extra time per checkpoint is given in training epochs.

Projection memory (rows ``r18_*``, ``--proj-k``, default 128): torchvision ``resnet18(weights=None,
num_classes=10)`` (random init, no download), every parameter (D = 11.2M), 16 random 3x32x32 images
in batches of 8, one checkpoint:

* ``r18_dense_gaussian``: what ``projection_dim`` built before, a dense ``D x k`` Gaussian
  (``torch.randn(D, k) / sqrt(k)``), alone; at ``--dense-k`` (default ``--proj-k``), linear in k.
* ``r18_sketch``: the count sketch that replaces it: hashes for all D parameters, then one batch of
  8 per-example gradients (drawn before the measurement) projected.
* ``r18_exact`` / ``r18_projected``: ``TracIn(batch_size=8).self_influence`` without and with
  ``projection_dim=k`` (per-example gradients included: their ``8 x D`` floats dominate).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_influence.py [--n 1024] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ROWS = ["unit", "ours", "captum_per_example", "captum_batched", "ours_last_layer", "captum_fast", "ours_projected"]
FIT_ROWS = ["fit_plain", "fit_tracin", "fit_tracin_fc"]
PROJ_ROWS = ["r18_dense_gaussian", "r18_sketch", "r18_exact", "r18_projected"]
FIT_EPOCHS = 3
SLOW_ROWS = {"captum_per_example"}
LABELS = {
    "unit": "one full-set forward+backward (unit)",
    "ours": "ours: TracIn (all parameters)",
    "captum_per_example": "captum TracInCP, per-example mode (all parameters)",
    "captum_batched": "captum TracInCP, batched mode (Conv2d/Linear only: no BatchNorm)",
    "ours_last_layer": "ours: TracIn(layers=['fc']), last-layer form",
    "captum_fast": "captum TracInCPFast (last layer)",
    "ours_projected": "ours: TracIn(projection_dim=128)",
    "r18_dense_gaussian": "resnet18: dense D x k Gaussian (the old projection), alone",
    "r18_sketch": "resnet18: count sketch built + one batch of 8 projected",
    "r18_exact": "resnet18: TracIn self-influence, 16 images, exact",
    "r18_projected": "resnet18: TracIn self-influence, 16 images, projection_dim=k",
    "fit_plain": "fit without the monitor",
    "fit_tracin": "fit with TracInMonitor (all parameters)",
    "fit_tracin_fc": "fit with TracInMonitor(gradient_layers=['fc'])",
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_workload(root: Path, n: int, bias: bool = True) -> None:
    import torch
    from torch import nn

    from tests.helpers.models import SmallCNN, randomize_batchnorm

    torch.manual_seed(0)
    model = SmallCNN(1, 10, width=8)
    if not bias:
        model.fc = nn.Linear(model.fc.in_features, 10, bias=False)
    randomize_batchnorm(model)
    gen = torch.Generator().manual_seed(1)
    torch.save(
        {"x": torch.rand(n, 1, 16, 16, generator=gen), "y": torch.randint(0, 10, (n,), generator=gen)}, root / "data.pt"
    )
    torch.save(model, root / f"model{int(bias)}.pt")
    for c, lr in enumerate([0.1, 0.05, 0.02]):
        state = {
            k: (v + 0.05 * c * torch.randn(v.shape, generator=gen)) if v.is_floating_point() else v
            for k, v in model.state_dict().items()
        }
        torch.save({"state_dict": state, "learning_rate": lr}, root / f"ckpt{int(bias)}_{c}.pt")


def fit_worker(row: str, out: Path) -> None:
    """A 3-epoch fit of the demo CNN on 2,048 shapes images (32x32), with or without the monitor."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import TensorBoardLogger

    torch.set_num_threads(1)
    from lightning_xai.callbacks import TracInMonitor
    from lightning_xai.data import ShapesDataModule
    from lightning_xai.demo import ShapesClassifier

    callbacks = []
    if row == "fit_tracin":
        callbacks = [TracInMonitor(gradient_layers=None, num_samples=4, num_top_examples=16)]
    elif row == "fit_tracin_fc":
        callbacks = [TracInMonitor(num_samples=4, num_top_examples=16, gradient_layers=["fc"])]
    pl.seed_everything(0, verbose=False)
    dm = ShapesDataModule(batch_size=64, num_train=2048, num_val=64, image_size=32, num_classes=4, seed=0)
    model = ShapesClassifier(num_classes=4, width=8)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(
            max_epochs=FIT_EPOCHS,
            accelerator="cpu",
            devices=1,
            callbacks=callbacks,
            logger=TensorBoardLogger(tmp),
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        seconds = time.perf_counter() - start
    out.write_text(json.dumps({"row": row, "seconds": seconds, "peak_mb": _peak_mb()}))
    torch.save(torch.zeros(1), out.with_suffix(".pt"))


def projection_worker(row: str, k: int, dense_k: int, out: Path) -> None:
    """resnet18 (random init): the projection's peak memory and time, old dense Gaussian vs sketch."""
    import math

    import torch
    import torchvision

    torch.set_num_threads(1)
    from lightning_xai.influence import TracIn
    from lightning_xai.influence._projection import GradientSketch

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    names = [n for n, _ in model.named_parameters()]
    d = sum(p.numel() for p in model.parameters())
    x, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    checkpoint = [(model.state_dict(), 0.1)]
    grads = torch.randn(8, d) if row == "r18_sketch" else None
    if row in ("r18_exact", "r18_projected"):  # warm-up on 2 examples: torch.func's first use is not timed
        TracIn(batch_size=8, projection_dim=k if row == "r18_projected" else None).self_influence(
            model, checkpoint, x[:2], y[:2]
        )
    before = _rss_mb()
    start = time.perf_counter()
    if row == "r18_dense_gaussian":
        gen = torch.Generator().manual_seed(0)
        matrix = torch.randn(d, dense_k, generator=gen) / math.sqrt(dense_k)
        result = matrix[:1, :1].clone()
        del matrix
    elif row == "r18_sketch":
        sketch = GradientSketch(model, names, k, seed=0, device=torch.device("cpu"))
        result = sketch.flat(grads)
    else:
        tracin = TracIn(batch_size=8, projection_dim=k if row == "r18_projected" else None)
        result = tracin.self_influence(model, checkpoint, x, y)
    seconds = time.perf_counter() - start
    peak = _peak_mb() - before
    torch.save(result, out.with_suffix(".pt"))
    out.write_text(
        json.dumps({"row": row, "seconds": seconds, "peak_mb": max(peak, 0.0), "d": d, "k": k, "dense_k": dense_k})
    )


def worker(row: str, root: Path, out: Path) -> None:
    import copy

    import torch
    from torch import nn

    torch.set_num_threads(1)
    from lightning_xai.influence import TracIn

    bias = row not in ("ours_last_layer", "captum_fast")
    data = torch.load(root / "data.pt", weights_only=True)
    x, y = data["x"], data["y"]
    model = torch.load(root / f"model{int(bias)}.pt", weights_only=False).eval()
    paths = [str(root / f"ckpt{int(bias)}_{c}.pt") for c in range(3)]
    lrs = [0.1, 0.05, 0.02]
    checkpoints = list(zip(paths, lrs))

    def load(m: nn.Module, path: str) -> float:
        state = torch.load(path, weights_only=True)
        m.load_state_dict(state["state_dict"])
        return float(state["learning_rate"])

    def run(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if row == "unit":
            params = [p for p in model.parameters()]
            for i in range(0, len(xs), 64):
                loss = nn.functional.cross_entropy(model(xs[i : i + 64]), ys[i : i + 64], reduction="sum")
                torch.autograd.grad(loss, params)
            return torch.zeros(1)
        if row == "ours":
            return TracIn(batch_size=64).self_influence(model, checkpoints, xs, ys)
        if row == "ours_last_layer":
            return TracIn(layers=["fc"], batch_size=64).self_influence(model, checkpoints, xs, ys)
        if row == "ours_projected":
            return TracIn(projection_dim=128, batch_size=64).self_influence(model, checkpoints, xs, ys)
        from captum.influence import TracInCP, TracInCPFast
        from torch.utils.data import DataLoader, TensorDataset

        oracle_model = copy.deepcopy(model)
        loader = DataLoader(TensorDataset(xs, ys), batch_size=64)
        if row == "captum_fast":
            oracle = TracInCPFast(
                oracle_model,
                "fc",
                loader,
                paths,
                checkpoints_load_func=load,
                loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                batch_size=64,
            )
        else:
            per_example = row == "captum_per_example"
            oracle = TracInCP(
                oracle_model,
                loader,
                paths,
                checkpoints_load_func=load,
                loss_fn=nn.CrossEntropyLoss(reduction="none" if per_example else "sum"),
                batch_size=64,
                sample_wise_grads_per_batch=not per_example,
            )
        return oracle.self_influence(loader)

    run(x[:64], y[:64])  # warm-up: one-time costs are not timed
    before = _rss_mb()
    start = time.perf_counter()
    result = run(x, y)
    seconds = time.perf_counter() - start
    peak = _peak_mb() - before
    torch.save(result, out.with_suffix(".pt"))
    out.write_text(json.dumps({"row": row, "seconds": seconds, "peak_mb": max(peak, 0.0)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", default=",".join(ROWS + FIT_ROWS + PROJ_ROWS))
    parser.add_argument("--json", default=None)
    parser.add_argument("--proj-k", type=int, default=128, help="projection_dim of the resnet18 rows")
    parser.add_argument("--dense-k", type=int, default=None, help="k of the dense Gaussian row (default --proj-k)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker in FIT_ROWS:
            fit_worker(args.worker, Path(args.out))
        elif args.worker in PROJ_ROWS:
            projection_worker(args.worker, args.proj_k, args.dense_k or args.proj_k, Path(args.out))
        else:
            worker(args.worker, Path(args.root), Path(args.out))
        return

    import torch

    rows = [r for r in args.rows.split(",") if r]
    results: dict[str, list[dict]] = {r: [] for r in rows}
    outputs: dict[str, torch.Tensor] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workload(root, args.n, bias=True)
        make_workload(root, args.n, bias=False)
        for rep in range(args.repeats):
            order = rows[rep % len(rows) :] + rows[: rep % len(rows)]  # rotate: load drifts hit everyone
            for row in order:
                if row in SLOW_ROWS and rep > 0:
                    continue  # 20x slower than the rest: one run says enough
                out = root / f"{row}_{rep}.json"
                env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
                cmd = [sys.executable, __file__, "--worker", row, "--root", str(root), "--out", str(out)]
                cmd += ["--proj-k", str(args.proj_k), "--dense-k", str(args.dense_k or args.proj_k)]
                subprocess.run(cmd, check=True, env=env)
                results[row].append(json.loads(out.read_text()))
                outputs[row] = torch.load(out.with_suffix(".pt"), weights_only=True)
                print(f"  {row:20s} round {rep}: {results[row][-1]['seconds']:.2f} s", flush=True)

    med = {r: statistics.median(s["seconds"] for s in results[r]) for r in rows}
    mem = {r: max(s["peak_mb"] for s in results[r]) for r in rows}
    unit = med.get("unit")
    fit_rows = [r for r in rows if r in FIT_ROWS]
    proj_rows = [r for r in rows if r in PROJ_ROWS]
    rows = [r for r in rows if r not in FIT_ROWS and r not in PROJ_ROWS]
    print(
        f"\nTracIn self-influence, {args.n} examples x 3 checkpoints, SmallCNN(1, 10) on 16x16, batch 64, "
        f"1 thread, median of {args.repeats} runs"
    )
    print(f"{'row':68s} {'seconds':>8s} {'passes':>7s} {'peak MB':>8s}")
    for r in rows:
        passes = f"{med[r] / unit:7.1f}" if unit else "    n/a"
        print(f"{LABELS[r]:68s} {med[r]:8.2f} {passes} {mem[r]:8.1f}")
    ratios = {}
    for ours, theirs in (
        ("ours", "captum_per_example"),
        ("ours", "captum_batched"),
        ("ours_last_layer", "captum_fast"),
    ):
        if ours in med and theirs in med:
            ratios[f"{ours}/{theirs}"] = med[ours] / med[theirs]
            print(f"ratio {ours} / {theirs}: {ratios[f'{ours}/{theirs}']:.3f}")
    checks = {}
    for ours, theirs in (
        ("ours", "captum_per_example"),
        ("ours_last_layer", "captum_fast"),
        ("ours", "captum_batched"),
    ):
        if ours in outputs and theirs in outputs:
            a, b = outputs[ours].double(), outputs[theirs].double()
            checks[f"{ours} vs {theirs}"] = float((a - b).abs().max() / b.abs().max())
            print(f"max |{ours} - {theirs}| / max |{theirs}| = {checks[f'{ours} vs {theirs}']:.2e}")
    if "ours_projected" in outputs and "ours" in outputs:
        r = float(torch.corrcoef(torch.stack([outputs["ours"], outputs["ours_projected"]]))[0, 1])
        checks["projected correlation"] = r
        print(f"correlation of projected (128) with exact self-influence: {r:.4f}")
    monitor = {}
    if "fit_plain" in fit_rows:
        plain = statistics.median(s["seconds"] for s in results["fit_plain"])
        epoch = plain / FIT_EPOCHS
        print(
            f"\nMonitor cost: demo CNN (width 8), 2,048 shapes images 32x32, {FIT_EPOCHS} epochs, a checkpoint every epoch"
        )
        print(f"{'fit':48s} {'seconds':>8s} {'per checkpoint, in training epochs':>36s}")
        print(f"{LABELS['fit_plain']:48s} {plain:8.2f} {'':>36s}")
        for r in fit_rows:
            if r == "fit_plain":
                continue
            t = statistics.median(s["seconds"] for s in results[r])
            monitor[r] = (t - plain) / FIT_EPOCHS / epoch
            print(f"{LABELS[r]:48s} {t:8.2f} {monitor[r]:36.2f}")
    projection = {}
    if proj_rows:
        info = results[proj_rows[0]][0]
        print(
            f"\nProjection memory: resnet18 (random init, D = {info['d']:,}), k = {info['k']}, 1 thread, "
            f"median time / max peak RSS increase of {args.repeats} runs"
        )
        print(f"{'row':68s} {'seconds':>8s} {'peak MB':>8s}")
        for r in proj_rows:
            label = LABELS[r] + (f" (k={info['dense_k']})" if r == "r18_dense_gaussian" else "")
            print(f"{label:68s} {med[r]:8.2f} {mem[r]:8.1f}")
            projection[r] = {"seconds": med[r], "peak_mb": mem[r]}
        if "r18_dense_gaussian" in proj_rows:
            scaled = mem["r18_dense_gaussian"] * info["k"] / info["dense_k"]
            print(
                f"dense Gaussian peak at k={info['k']} (linear in k): {scaled:.0f} MB "
                f"(the matrix alone: {info['d'] * info['k'] * 4 / 2**20:.0f} MB)"
            )
            projection["dense_gaussian_peak_mb_at_k"] = scaled
        if "r18_exact" in outputs and "r18_projected" in outputs:
            r = float(torch.corrcoef(torch.stack([outputs["r18_exact"], outputs["r18_projected"]]))[0, 1])
            projection["correlation"] = r
            print(f"correlation of projected with exact resnet18 self-influence (16 images): {r:.4f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "results": results,
                    "median": med,
                    "peak_mb": mem,
                    "ratios": ratios,
                    "checks": checks,
                    "monitor_epochs_per_checkpoint": monitor,
                    "projection": projection,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
