"""Training-time overhead of the monitors (not a timed test), as ratios from one invocation.

Two workloads, each run with and without the monitor, alternating, ``--repeats`` pairs:

1. **demo**: ``lightning-xai demo`` (6 epochs, 12,288 images of 48x48 an epoch) with
   ``SaliencyMonitor`` alone at its default schedule (Grad-CAM + IG-16 on 8 probe images, every
   epoch), and with every monitor the demo attaches (+ ``TCAVMonitor``, ``MetricsMonitor``,
   ``SanityCheckMonitor``).
2. **heavy**: small epochs (2,048 images) with three explainers every epoch (Grad-CAM, IG-16,
   SmoothGrad-16), once at the plain schedule and once with ``max_overhead=0.05``.

For each it prints the median fit times, their ratio, and the time spent on the training thread
inside the monitor's hooks (``setup``, ``on_fit_start``, the scheduled runs and the final flush of
the background writer at ``on_fit_end``) as a share of the fit. On a shared 2-core machine the
fit time of the same run varies by several percent, so the in-hook share is the steadier measure;
rendering and writing happen on a background thread and count only through contention.

    python benchmarks/bench_callbacks.py [--repeats 3] [--epochs 6] [--skip-heavy] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time

import lightning_xai.callbacks.base as monitor_base
from lightning_xai.cli import run_demo

_in_hooks: list[float] = []


def _timed(name: str) -> None:
    original = getattr(monitor_base.MonitorBase, name)

    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            _in_hooks.append(time.perf_counter() - start)

    setattr(monitor_base.MonitorBase, name, wrapper)


def _measure(label: str, argv: list[str], repeats: int, with_args: list[str]) -> dict[str, float]:
    times: dict[str, list[float]] = {"without": [], "with": []}
    shares: list[float] = []
    for _ in range(repeats):
        for mode in ("without", "with"):
            _in_hooks.clear()
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
                extra = ["--no-monitors"] if mode == "without" else with_args
                result = run_demo([*argv, "--log-dir", tmp, *extra])
            seconds = float(result["seconds"])
            times[mode].append(seconds)
            line = f"{label:>28} {mode:>8}: fit {seconds:6.2f} s"
            if mode == "with":
                shares.append(sum(_in_hooks) / seconds)
                line += f", {sum(_in_hooks):.2f} s inside the monitor ({100 * shares[-1]:.1f}%)"
            print(line, flush=True)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    return {
        "without_s": without,
        "with_s": with_,
        "ratio": with_ / without,
        "in_monitor_share": statistics.median(shares),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--skip-heavy", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    for name in ("setup", "on_fit_start", "_maybe_run", "on_fit_end"):
        _timed(name)
    only_saliency = ["--no-tcav", "--no-quality"]
    demo = ["--epochs", str(args.epochs)]
    rows = {
        "demo, SaliencyMonitor (Grad-CAM + IG-16, every epoch)": _measure(
            "demo saliency", demo, args.repeats, only_saliency
        ),
        "demo, all its monitors (+ TCAV, metrics, sanity check)": _measure("demo all", demo, args.repeats, []),
    }
    if not args.skip_heavy:
        heavy = ["--epochs", str(args.epochs), "--num-train", "2048", *only_saliency]
        three = ["--explainers", "grad_cam,integrated_gradients,smoothgrad"]
        rows["small epochs, 3 explainers"] = _measure("heavy", heavy, args.repeats, three)
        rows["small epochs, 3 explainers, max_overhead=0.05"] = _measure(
            "heavy+budget", heavy, args.repeats, [*three, "--max-overhead", "0.05"]
        )
    print("\n| workload | fit without | fit with | ratio | time inside the monitor |\n|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['without_s']:.2f} s | {r['with_s']:.2f} s | {r['ratio']:.3f} | "
            f"{100 * r['in_monitor_share']:.1f}% |"
        )
    print("\ntarget: overhead <= 5% at the default schedule")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
