"""Training-time overhead of the default monitor on the demo (not a timed test).

Runs the demo (``lightning-xai demo``: 6 epochs, 12,288 images of 48x48 a epoch) with and without
``SaliencyMonitor`` at its default schedule (every epoch), alternating, and prints

* the end-to-end fit times and their ratio (medians over ``--repeats`` pairs), and
* the time spent inside the monitor's hooks in the runs with it (measured in-process around
  ``XAIMonitor.setup``, ``on_fit_start`` and each scheduled run), as a share of that run's fit time.

On a shared 2-core machine the fit time of the same run varies by several percent from run to
run, so the in-hook share is the steadier measure of what the monitor costs; both are printed.

    python benchmarks/bench_callbacks.py [--repeats 5] [--epochs 6] [--json out.json]
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
    original = getattr(monitor_base.XAIMonitor, name)

    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            _in_hooks.append(time.perf_counter() - start)

    setattr(monitor_base.XAIMonitor, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    for name in ("setup", "on_fit_start", "_run"):
        _timed(name)
    times: dict[str, list[float]] = {"without": [], "with": []}
    shares: list[float] = []
    for _ in range(args.repeats):
        for mode in ("without", "with"):
            _in_hooks.clear()
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
                argv = ["--epochs", str(args.epochs), "--log-dir", tmp]
                result = run_demo(argv + (["--no-monitors"] if mode == "without" else []))
            seconds = float(result["seconds"])
            times[mode].append(seconds)
            line = f"{mode:>8} monitor: fit {seconds:6.2f} s"
            if mode == "with":
                shares.append(sum(_in_hooks) / seconds)
                line += f", {sum(_in_hooks):.2f} s inside the monitor ({100 * shares[-1]:.1f}%)"
            print(line, flush=True)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    print("\n| measure | value |\n|---|---|")
    print(f"| demo fit without the monitor (median of {args.repeats}) | {without:.2f} s |")
    print(f"| demo fit with SaliencyMonitor (GradCAM + IG-16, 8 probes, every epoch) | {with_:.2f} s |")
    print(f"| end-to-end overhead (ratio of medians) | {100 * (with_ / without - 1):+.1f}% |")
    print(f"| time inside the monitor, share of its fit (median) | {100 * statistics.median(shares):.1f}% |")
    print("\ntarget: overhead <= 5% at the default schedule")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"times": times, "in_monitor_share": shares}, f, indent=2)


if __name__ == "__main__":
    main()
