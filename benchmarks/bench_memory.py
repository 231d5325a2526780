"""Peak memory of one explanation of 8 images at 224 x 224 on resnet50 (random init), CPU or CUDA.

Each configuration runs in a fresh child process. On the CPU the figure is the rise of the
process's peak resident set size during the call (``VmHWM`` of ``/proc/self/status``, reset through
``/proc/self/clear_refs`` just before the call: the model, the inputs and the libraries are
excluded); on CUDA it is ``torch.cuda.max_memory_allocated`` minus the memory allocated before
the call.

The "old default" rows pass the chunk sizes the library used before issue 6 explicitly
(Integrated Gradients: ``2**24`` input elements, 111 images at 224; NoiseTunnel: every noisy copy
at once), the "default" rows pass nothing. A chunk's peak does not depend on how many chunks
follow, so the CPU run uses few steps / samples, enough for one full chunk (``--steps`` and
``--samples`` raise them).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_memory.py [--device cpu|cuda] [--steps 14] [--samples 16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BATCH, SIZE = 8, 224


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(name: str, chunk: int | None, steps: int, samples: int, device: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from torchvision.models import resnet50

    from lightning_xai.attribution import IntegratedGradients, NoiseTunnel, Saliency

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    torch.manual_seed(0)
    model = resnet50(weights=None).eval().to(device)
    x = torch.rand(BATCH, 3, SIZE, SIZE, device=device)
    target = torch.arange(BATCH, device=device)
    if name.startswith("ig"):
        explainer = IntegratedGradients(n_steps=steps, internal_batch_size=chunk)
        rows = steps * BATCH
    else:
        explainer = NoiseTunnel(Saliency(), n_samples=samples, internal_batch_size=chunk)
        rows = samples * BATCH
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        base = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    out = explainer(model, x, target)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    seconds = time.perf_counter() - start
    chunk_rows = chunk or explainer._chunk_rows(x) if name.startswith("ig") else chunk or (2**22 // x[0].numel())
    return {
        "config": name,
        "rows": rows,
        "chunk_rows": chunk_rows,
        "peak_gib": peak / 2**30,
        "seconds": seconds,
        "finite": bool(torch.isfinite(out).all()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=14, help="IG steps (8 * 14 = 112 rows: one old-default chunk)")
    parser.add_argument("--samples", type=int, default=16, help="NoiseTunnel samples (16 * 8 = 128 noisy copies)")
    parser.add_argument("--only", default=None, help="comma-separated configs")
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, chunk = args.child
        print(json.dumps(child(name, int(chunk) or None, args.steps, args.samples, args.device)))
        return 0
    configs = {
        "ig_old_default": 2**24 // (3 * SIZE * SIZE),
        "ig_default": 0,
        "smoothgrad_old_default": args.samples * BATCH,
        "smoothgrad_default": 0,
    }
    if args.only:
        configs = {k: v for k, v in configs.items() if k in args.only.split(",")}
    print(f"resnet50 (random init), {BATCH} x 3 x {SIZE} x {SIZE}, device {args.device}")
    print(f"{'config':<24}{'rows':>6}{'chunk':>7}{'peak GiB':>10}{'seconds':>9}")
    for name, chunk in configs.items():
        cmd = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps)]
        cmd += ["--samples", str(args.samples), "--child", name, str(chunk)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name:<24} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name:<24}{r['rows']:>6}{r['chunk_rows']:>7}{r['peak_gib']:>10.2f}{r['seconds']:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
