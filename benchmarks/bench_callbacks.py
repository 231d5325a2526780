"""Training-time overhead of the default monitors on the demo (not a timed test).

Runs the demo (``lightning-xai demo``) with and without ``SaliencyMonitor`` at its default schedule
(every epoch), alternating, and prints the median wall time of each and the overhead ratio.

    python benchmarks/bench_callbacks.py [--repeats 3] [--epochs 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile

from lightning_xai.cli import run_demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(args.repeats):
        for mode in ("without", "with"):
            with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
                argv = ["--epochs", str(args.epochs), "--log-dir", tmp] + (
                    ["--no-monitors"] if mode == "without" else []
                )
                result = run_demo(argv)
            times[mode].append(float(result["seconds"]))
            print(f"{mode:>8} monitors: {times[mode][-1]:.2f} s", flush=True)
    without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    overhead = with_ / without - 1.0
    print("\n| run | median fit time (s) |\n|---|---|")
    print(
        f"| demo without monitors | {without:.2f} |\n| demo with SaliencyMonitor (GradCAM + IG-16, 8 probes, every epoch) | {with_:.2f} |"
    )
    print(f"\noverhead: {100 * overhead:+.1f}% (target <= 5%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"times": times, "overhead": overhead}, f, indent=2)


if __name__ == "__main__":
    main()
