"""Speed of every lightning_xai explainer against its oracle library, on CPU.

Two workloads, the same for ours and the oracle (identical weights, inputs and integer class
targets, equivalent configuration):

* ``small``: ``tests.helpers.models.SmallCNN(1, 10)`` (eval) on a ``16 x 1 x 28 x 28`` batch;
* ``resnet18``: torchvision ``resnet18(num_classes=10)`` (random init, eval) on ``8 x 3 x 64 x 64``.

Each row times, in interleaved rounds whose order rotates, the *cost unit* ("pass": one forward +
backward pass of the batch, ``torch.autograd.grad`` of the target scores w.r.t. the input), ours
and the oracle, with :func:`time.perf_counter` after warm-up rounds; the table shows medians (and
the quartiles of the per-round ratio ours/oracle), and ours in passes is our median over the
row's unit median. Fast rows get up to 400 rounds: a few-millisecond call on 2 shared cores
varies by 10% from call to call. Targets (issue): every ratio ours/oracle <= 1.0; the single-pass methods within
1.3 passes; Integrated Gradients with ``n`` steps within ``1.15 n`` passes. A row that misses a
target is flagged with ``(!)``.

Oracles: captum (``Saliency``, ``InputXGradient``, ``GuidedBackprop``, ``Deconvolution``,
``NoiseTunnel``, ``IntegratedGradients``, ``LayerGradCam`` + ``LayerAttribution.interpolate``,
``GuidedGradCam``) and pytorch-grad-cam (``GradCAM``, ``GradCAMPlusPlus``, ``ScoreCAM``,
``FullGrad``). pytorch-grad-cam objects are built outside the timed region (their constructor
registers the hooks) and released right after their row, so no oracle's hooks run during another
measurement; the script checks that the model carries no hook between rows.

Peak memory (columns ``peak MiB``): one extra, untimed call of ours and of the oracle, measured as
the rise of the process's peak resident set size during the call (``VmHWM`` of
``/proc/self/status``, reset through ``/proc/self/clear_refs`` just before it; glibc's malloc is
told to return freed blocks of 64 KiB and more to the system at once, so memory cached from an
earlier call does not hide a peak); on CUDA, ``torch.cuda.max_memory_allocated`` minus the memory
allocated before the call. ``benchmarks/bench_memory.py`` measures resnet50 at 224 x 224.

The column ``match``, compares our map with the oracle's (max abs difference over the max
abs oracle value, after the normalisation the oracle applies) to show the configurations are
equivalent (CAM and Grad-CAM after dividing each map by its maximum); ``n/a`` for the noise
tunnel, whose noise differs.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_attribution.py [--quick] [--workload small|resnet18|all]
        [--json PATH] [--methods Saliency,GradCAM] [--repeats N]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's ScoreCAM draws a progress bar per input

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from lightning_xai import attribution as xai  # noqa: E402
from tests.helpers.models import SmallCNN, randomize_batchnorm, resnet18  # noqa: E402

THREADS = 2
N_SAMPLES = 16  # NoiseTunnel
STDEV = 0.15  # NoiseTunnel, fraction of each input's range (ours)
IG_STEPS = 32
SCORECAM_BATCH = 16
SINGLE_PASS_TARGET = 1.3
IG_TARGET = 1.15  # per step
RATIO_TARGET = 1.0
MISS = " (!)"
OTHERS_WARNING = 0.05  # share of the CPUs other processes may use before the run is flagged as contended


# --------------------------------------------------------------------------------------------
# workloads
# --------------------------------------------------------------------------------------------
@dataclass
class Workload:
    name: str
    model: nn.Module
    inputs: Tensor
    target: Tensor  # [B] int64 class indices
    cam_layer: str  # our default: the module producing the feature map the global pool consumes
    gap_input_layer: str  # the module whose output the global average pooling reads (CAM)

    @property
    def targets_list(self) -> list[int]:
        return [int(t) for t in self.target]

    def layer(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)


def make_workload(name: str) -> Workload:
    torch.manual_seed(0)
    if name == "small":
        model, shape, gap_input = SmallCNN(1, 10), (16, 1, 28, 28), "features"
    elif name == "resnet18":
        model, shape, gap_input = resnet18(10), (8, 3, 64, 64), "layer4"
    else:
        raise ValueError(f"Unknown workload {name!r}.")
    randomize_batchnorm(model, 0)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    inputs = torch.rand(shape, generator=gen)
    target = torch.randint(0, 10, (shape[0],), generator=gen)
    return Workload(name, model, inputs, target, xai.default_cam_layer(model, inputs), gap_input)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
@dataclass
class Timed:
    """A callable to time, with untimed set-up and tear-down around every call (pytorch-grad-cam
    registers its hooks when built: they must not run during the other measurements)."""

    call: Callable[[], Any]
    setup: Callable[[], None] = lambda: None
    teardown: Callable[[], None] = lambda: None


def limit_malloc_caching() -> None:
    """Make glibc's malloc return freed blocks of 64 KiB and more to the system (no dynamic mmap
    threshold, no trim threshold), so a call's peak RSS is not hidden by memory an earlier call freed."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 1 << 16)  # M_TRIM_THRESHOLD


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_mib(timed: Timed, device: torch.device) -> float | None:
    """Peak memory of one call of ``timed`` above what was in use before it, in MiB (see the module
    docstring); ``None`` where it cannot be measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _time_once(timed)
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    base = _status_kib("VmRSS")
    _time_once(timed)
    peak = _status_kib("VmHWM")
    return None if base is None or peak is None else (peak - base) / 1024


def _time_once(timed: Timed) -> tuple[float, Any]:
    timed.setup()
    try:
        start = time.perf_counter()
        result = timed.call()
        elapsed = time.perf_counter() - start
    finally:
        timed.teardown()
    return elapsed * 1e3, result


def measure_interleaved(
    timeds: list[Timed], min_repeats: int, max_repeats: int, warmup: int, budget_s: float
) -> tuple[list[list[float]], list[Any]]:
    """Time every callable of ``timeds`` round-robin, after ``warmup`` rounds, with garbage
    collection off while timing; interleaving keeps a change of machine load from favouring one
    of them, and the order rotates from round to round. The number of timed rounds fills about ``budget_s`` seconds, within
    ``[min_repeats, max_repeats]`` (fast rows get many rounds: their medians are noisier). Returns
    the samples (ms) of each callable and its last result."""
    results: list[Any] = [None] * len(timeds)
    first = 0.0
    for i in range(max(warmup, 1)):
        for j, timed in enumerate(timeds):
            elapsed, results[j] = _time_once(timed)
            if i == 0:
                first += elapsed / 1e3
        if first > budget_s:  # one warm-up round is enough for a slow row
            break
    repeats = max(min_repeats, min(max_repeats, int(budget_s / max(first, 1e-9))))
    samples: list[list[float]] = [[] for _ in timeds]
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            for j in _rotated(len(timeds), i):
                elapsed, _ = _time_once(timeds[j])
                samples[j].append(elapsed)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples, results


def _rotated(n: int, shift: int) -> list[int]:
    """``range(n)`` rotated by ``shift``: every callable takes every position in the round in
    turn (the one after the cost unit or after another method runs measurably slower on a busy
    cache)."""
    return [(k + shift) % n for k in range(n)]


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def unit_pass(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """The cost unit: one forward + backward pass of the batch, gradient w.r.t. the input."""
    x = inputs.detach().clone().requires_grad_(True)
    scores = model(x).gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(scores, x)
    return grad


def _cpu_busy_s() -> float | None:
    """CPU seconds all processes spent busy so far (``/proc/stat``; None where unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """How much of the machine *other* processes used while this one ran: the busy CPU time of
    all processes (``/proc/stat``) minus this process's own, over wall time times CPUs."""

    def __init__(self) -> None:
        self._busy = _cpu_busy_s()
        self._own = sum(os.times()[:2])
        self._wall = time.perf_counter()

    def others(self) -> float | None:
        busy = _cpu_busy_s()
        if busy is None or self._busy is None:
            return None
        own = sum(os.times()[:2]) - self._own
        wall = time.perf_counter() - self._wall
        return max(0.0, (busy - self._busy - own) / (wall * (os.cpu_count() or 1)))


def count_hooks(model: nn.Module) -> int:
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total


# --------------------------------------------------------------------------------------------
# comparison of maps
# --------------------------------------------------------------------------------------------
def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, tuple):
        value = value[0]
    return value.detach().float()


def rel_error(
    ours: Any,
    oracle: Any,
    transform: Callable[[Tensor], Tensor] | None = None,
    oracle_transform: Callable[[Tensor], Tensor] | None = None,
) -> float:
    a = _as_tensor(ours)
    b = _as_tensor(oracle)
    if transform is not None:
        a = transform(a)
    if oracle_transform is not None:
        b = oracle_transform(b)
    a = a.reshape(b.shape) if a.numel() == b.numel() else a
    if a.shape != b.shape:
        return float("nan")
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def pgc_normalised(maps: Tensor) -> Tensor:
    """pytorch-grad-cam's output form of a ``[B, 1, H, W]`` map: per-image min-max, twice."""
    return xai.cam.minmax_normalize(xai.cam.minmax_normalize(maps))[:, 0]


def per_image_max(maps: Tensor) -> Tensor:
    """Each map divided by its maximum (CAM equals Grad-CAM at the pooled layer up to a factor)."""
    flat = maps.flatten(1)
    return (flat / flat.amax(dim=1, keepdim=True).clamp_min(1e-12)).view_as(maps)


# --------------------------------------------------------------------------------------------
# the methods and their oracles
# --------------------------------------------------------------------------------------------
@dataclass
class Oracle:
    name: str
    build: Callable[[Workload], Timed]
    # maps our output to the oracle's form; None: not comparable
    compare: Callable[[Tensor], Tensor] | None = lambda t: t
    # applied to the oracle's output before comparing
    oracle_transform: Callable[[Tensor], Tensor] | None = None


@dataclass
class Method:
    name: str
    ours: Callable[[Workload], Callable[[], Tensor]]
    oracles: list[Oracle]
    target_passes: Callable[[Workload], float] | None = None
    target_label: str = ""


def _captum(factory: Callable[[Workload], Callable[[], Any]]) -> Callable[[Workload], Timed]:
    return lambda w: Timed(factory(w))


def _pgc(cls_name: str, layers: str = "cam", batch_size: int | None = None) -> Callable[[Workload], Timed]:
    """A pytorch-grad-cam object built (hooks registered) before each timed call and released
    after it, so its hooks never run during another measurement."""

    def build(w: Workload) -> Timed:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cls = getattr(pytorch_grad_cam, cls_name)
        target_layers = [] if layers == "none" else [w.layer(w.cam_layer)]
        targets = [ClassifierOutputTarget(t) for t in w.targets_list]
        state: dict[str, Any] = {}

        def setup() -> None:
            cam = cls(model=w.model, target_layers=target_layers)
            if batch_size is not None:
                cam.batch_size = batch_size
            state["cam"] = cam

        def call() -> Any:
            return state["cam"](input_tensor=w.inputs, targets=targets)

        def teardown() -> None:
            cam = state.pop("cam")
            cam.activations_and_grads.release()
            cam.outputs = None
            w.model.zero_grad(set_to_none=True)  # it calls .backward(): drop the parameter gradients

        return Timed(call, setup, teardown)

    return build


def _interp(maps: Tensor, w: Workload, mode: str = "bilinear") -> Tensor:
    from captum.attr import LayerAttribution

    return LayerAttribution.interpolate(maps, tuple(w.inputs.shape[-2:]), mode)


def _captum_gradcam(layer_attr: str) -> Callable[[Workload], Callable[[], Any]]:
    def factory(w: Workload) -> Callable[[], Any]:
        from captum.attr import LayerGradCam

        explainer = LayerGradCam(w.model, w.layer(getattr(w, layer_attr)))
        return lambda: _interp(explainer.attribute(w.inputs, target=w.target, relu_attributions=True), w)

    return factory


def _range_stdev(w: Workload) -> float:
    """The absolute standard deviation captum gets: ours is STDEV times each input's range
    (the mean range here, every input of torch.rand having a range of about 1)."""
    flat = w.inputs.flatten(1)
    return float(STDEV * (flat.amax(1) - flat.amin(1)).mean())


def build_methods() -> list[Method]:
    from captum.attr import (
        Deconvolution,
        GuidedBackprop,
        GuidedGradCam,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Saliency,
    )

    def ours(factory: Callable[[Workload], xai.Explainer]) -> Callable[[Workload], Callable[[], Tensor]]:
        def make(w: Workload) -> Callable[[], Tensor]:
            explainer = factory(w)
            return lambda: explainer(w.model, w.inputs, w.target)

        return make

    single = (lambda w: SINGLE_PASS_TARGET, f"<= {SINGLE_PASS_TARGET} passes")
    nt_all = N_SAMPLES
    nt_chunk = 4
    return [
        Method(
            "Saliency",
            ours(lambda w: xai.Saliency(abs=True)),
            [
                Oracle(
                    "captum Saliency",
                    _captum(lambda w: lambda: Saliency(w.model).attribute(w.inputs, target=w.target, abs=True)),
                )
            ],
            *single,
        ),
        Method(
            "InputXGradient",
            ours(lambda w: xai.InputXGradient()),
            [
                Oracle(
                    "captum InputXGradient",
                    _captum(lambda w: lambda: InputXGradient(w.model).attribute(w.inputs, target=w.target)),
                )
            ],
            *single,
        ),
        Method(
            "GuidedBackprop",
            ours(lambda w: xai.GuidedBackprop()),
            [
                Oracle(
                    "captum GuidedBackprop",
                    _captum(lambda w: lambda: GuidedBackprop(w.model).attribute(w.inputs, target=w.target)),
                )
            ],
            *single,
        ),
        Method(
            "Deconvnet",
            ours(lambda w: xai.Deconvnet()),
            [
                Oracle(
                    "captum Deconvolution",
                    _captum(lambda w: lambda: Deconvolution(w.model).attribute(w.inputs, target=w.target)),
                )
            ],
            *single,
        ),
        Method(
            f"NoiseTunnel(Saliency) {N_SAMPLES} samples, all at once",
            ours(
                lambda w: xai.NoiseTunnel(xai.Saliency(abs=True), kind="smoothgrad", n_samples=N_SAMPLES, stdev=STDEV)
            ),
            [
                Oracle(
                    f"captum NoiseTunnel(Saliency) nt_samples_batch_size={nt_all}",
                    _captum(
                        lambda w: (
                            lambda: NoiseTunnel(Saliency(w.model)).attribute(
                                w.inputs,
                                nt_type="smoothgrad",
                                nt_samples=N_SAMPLES,
                                nt_samples_batch_size=nt_all,
                                stdevs=_range_stdev(w),
                                target=w.target,
                                abs=True,
                            )
                        )
                    ),
                    compare=None,
                )
            ],
        ),
        Method(
            f"NoiseTunnel(Saliency) {N_SAMPLES} samples, {nt_chunk} per chunk",
            ours(
                lambda w: xai.NoiseTunnel(
                    xai.Saliency(abs=True),
                    kind="smoothgrad",
                    n_samples=N_SAMPLES,
                    stdev=STDEV,
                    internal_batch_size=nt_chunk * w.inputs.shape[0],
                )
            ),
            [
                Oracle(
                    f"captum NoiseTunnel(Saliency) nt_samples_batch_size={nt_chunk}",
                    _captum(
                        lambda w: (
                            lambda: NoiseTunnel(Saliency(w.model)).attribute(
                                w.inputs,
                                nt_type="smoothgrad",
                                nt_samples=N_SAMPLES,
                                nt_samples_batch_size=nt_chunk,
                                stdevs=_range_stdev(w),
                                target=w.target,
                                abs=True,
                            )
                        )
                    ),
                    compare=None,
                )
            ],
        ),
        Method(
            f"IntegratedGradients n_steps={IG_STEPS}",
            ours(lambda w: xai.IntegratedGradients(n_steps=IG_STEPS, method="gausslegendre", baseline="zero")),
            [
                Oracle(
                    "captum IntegratedGradients",
                    _captum(
                        lambda w: (
                            lambda: IntegratedGradients(w.model).attribute(
                                w.inputs,
                                baselines=None,
                                target=w.target,
                                n_steps=IG_STEPS,
                                method="gausslegendre",
                                internal_batch_size=None,
                            )
                        )
                    ),
                )
            ],
            lambda w: IG_TARGET * IG_STEPS,
            f"<= {IG_TARGET} x {IG_STEPS} passes",
        ),
        Method(
            "CAM",
            ours(lambda w: xai.CAM()),
            [
                Oracle(
                    "captum LayerGradCam(GAP input)+interpolate",
                    _captum(_captum_gradcam("gap_input_layer")),
                    compare=per_image_max,
                    oracle_transform=per_image_max,
                )
            ],
            *single,
        ),
        Method(
            "GradCAM",
            ours(lambda w: xai.GradCAM(layer=w.cam_layer)),
            [
                Oracle("captum LayerGradCam+interpolate", _captum(_captum_gradcam("cam_layer"))),
                Oracle("pytorch-grad-cam GradCAM", _pgc("GradCAM"), compare=pgc_normalised),
            ],
            *single,
        ),
        Method(
            "GuidedGradCAM",
            ours(lambda w: xai.GuidedGradCAM(layer=w.cam_layer)),
            [
                Oracle(
                    "captum GuidedGradCam",
                    _captum(
                        lambda w: (lambda g: lambda: g.attribute(w.inputs, target=w.target))(
                            GuidedGradCam(w.model, w.layer(w.cam_layer))
                        )
                    ),
                )
            ],
        ),
        Method(
            "GradCAMPlusPlus",
            ours(lambda w: xai.GradCAMPlusPlus(layer=w.cam_layer)),
            [Oracle("pytorch-grad-cam GradCAMPlusPlus", _pgc("GradCAMPlusPlus"), compare=pgc_normalised)],
            *single,
        ),
        Method(
            f"ScoreCAM batch {SCORECAM_BATCH}",
            ours(lambda w: xai.ScoreCAM(layer=w.cam_layer, internal_batch_size=SCORECAM_BATCH)),
            [
                Oracle(
                    f"pytorch-grad-cam ScoreCAM batch_size={SCORECAM_BATCH}",
                    _pgc("ScoreCAM", batch_size=SCORECAM_BATCH),
                    compare=pgc_normalised,
                )
            ],
        ),
        Method(
            "FullGrad",
            ours(lambda w: xai.FullGrad()),
            [
                Oracle(
                    "pytorch-grad-cam FullGrad",
                    _pgc("FullGrad", layers="none"),
                    compare=lambda t: xai.cam.minmax_normalize(t)[:, 0],
                )
            ],
        ),
    ]


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    method: str
    ours_ms: float | None
    oracle_ms: float | None
    oracle: str
    ratio: float | None
    passes: float | None
    target: str
    match: float | None
    misses: list[str] = field(default_factory=list)
    error: str | None = None
    unit_ms: float | None = None
    repeats: int = 0
    paired_ratio_iqr: tuple[float, float] | None = None  # quartiles of the per-round ours/oracle ratios
    ours_samples_ms: list[float] = field(default_factory=list)
    oracle_samples_ms: list[float] = field(default_factory=list)
    ours_peak_mib: float | None = None
    oracle_peak_mib: float | None = None


def _short_error(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    return text[:120]


def run_workload(
    w: Workload, methods: list[Method], min_repeats: int, max_repeats: int, warmup: int, budget_s: float
) -> dict[str, Any]:
    """Every (method, oracle) row is timed as one interleaved round of: the cost unit, ours, the
    oracle. ``passes`` is the median of ours over the median of that row's cost unit."""
    torch.set_num_threads(THREADS)
    unit = Timed(lambda: unit_pass(w.model, w.inputs, w.target))
    rows: list[Row] = []
    unit_samples: list[float] = []
    for method in methods:
        for oracle in method.oracles:
            print(f"  [{w.name}] {method.name} vs {oracle.name} ...", file=sys.stderr, flush=True)
            row = Row(method.name, None, None, oracle.name, None, None, method.target_label, None)
            timeds = [unit]
            try:
                timeds.append(Timed(method.ours(w)))
                _time_once(timeds[-1])
            except NotImplementedError:
                row.error = "ours: not implemented yet"
                timeds.pop()
            except Exception as err:  # noqa: BLE001 -- a broken explainer is a row, not a crash
                row.error = "ours: " + _short_error(err)
                timeds.pop()
            has_ours = len(timeds) == 2
            timeds.append(oracle.build(w))
            try:
                samples, results = measure_interleaved(timeds, min_repeats, max_repeats, warmup, budget_s)
            except Exception as err:  # noqa: BLE001
                row.error = (row.error + "; " if row.error else "") + "oracle: " + _short_error(err)
                rows.append(row)
                continue
            finally:
                gc.collect()
            device = w.inputs.device
            row.oracle_peak_mib = peak_mib(timeds[-1], device)
            if has_ours:
                row.ours_peak_mib = peak_mib(timeds[1], device)
            hooks = count_hooks(w.model)
            if hooks:
                raise RuntimeError(f"{method.name} / {oracle.name} left {hooks} hook(s) on the model")
            unit_samples += samples[0]
            row.unit_ms = statistics.median(samples[0])
            row.oracle_ms = statistics.median(samples[-1])
            row.oracle_samples_ms = samples[-1]
            row.repeats = len(samples[-1])
            if has_ours:
                row.ours_ms = statistics.median(samples[1])
                row.ours_samples_ms = samples[1]
                row.passes = row.ours_ms / row.unit_ms
                row.ratio = row.ours_ms / row.oracle_ms
                row.paired_ratio_iqr = quartiles([a / b for a, b in zip(samples[1], samples[-1])])
                if oracle.compare is not None:
                    row.match = rel_error(results[1], results[-1], oracle.compare, oracle.oracle_transform)
                if row.ratio > RATIO_TARGET:
                    row.misses.append("ratio")
                if method.target_passes is not None and row.passes > method.target_passes(w):
                    row.misses.append("passes")
            rows.append(row)
    return {
        "workload": w.name,
        "model": type(w.model).__name__,
        "input_shape": list(w.inputs.shape),
        "targets": w.targets_list,
        "cam_layer": w.cam_layer,
        "unit_pass_ms": statistics.median(unit_samples) if unit_samples else float("nan"),
        "unit_pass_min_ms": min(unit_samples) if unit_samples else float("nan"),
        "rows": [asdict(r) for r in rows],
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    lines = [
        f"### {result['workload']}: {result['model']} on {'x'.join(map(str, result['input_shape']))} "
        f"(CAM layer {result['cam_layer']!r})",
        "",
        f"cost unit (1 forward + 1 backward w.r.t. the input): median {result['unit_pass_ms']:.2f} ms over all "
        f"rows (min {result['unit_pass_min_ms']:.2f}); each row divides by the median of its own interleaved "
        "unit measurements",
        "",
        "| method | ours (ms) | oracle (ms) | oracle name | ratio ours/oracle [IQR] | ours in passes | pass target | "
        "match | peak MiB ours / oracle | runs |",
        "|---|---:|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        ratio = _fmt(r["ratio"])
        if r["paired_ratio_iqr"] is not None:
            ratio += " [{:.2f}-{:.2f}]".format(*r["paired_ratio_iqr"])
        ratio += MISS if "ratio" in r["misses"] else ""
        passes = _fmt(r["passes"]) + (MISS if "passes" in r["misses"] else "")
        match = "n/a" if r["match"] is None else f"{r['match']:.1e}"
        ours_ms = _fmt(r["ours_ms"]) if r["ours_ms"] is not None else (r["error"] or "-")
        oracle_ms = _fmt(r["oracle_ms"]) if r["oracle_ms"] is not None else (r["error"] or "-")
        peak = f"{_fmt(r['ours_peak_mib'], 0)} / {_fmt(r['oracle_peak_mib'], 0)}"
        lines.append(
            f"| {r['method']} | {ours_ms} | {oracle_ms} | {r['oracle']} | {ratio} | {passes} | "
            f"{r['target'] or '-'} | {match} | {peak} | {r['repeats']} |"
        )
    misses = [r for r in result["rows"] if r["misses"]]
    lines.append("")
    lines.append(
        f"{len(misses)} row(s) miss a target{MISS}: "
        + (", ".join(f"{r['method']} vs {r['oracle']} ({'+'.join(r['misses'])})" for r in misses) or "none")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3-10 timed rounds in about 2 s per row, 1 warm-up (default: 3-400 in 10 s, 2)",
    )
    parser.add_argument("--workload", choices=["small", "resnet18", "all"], default="all")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    parser.add_argument("--methods", default=None, help="comma-separated substrings of method names to run")
    parser.add_argument("--repeats", type=int, default=None, help="exactly this many timed rounds per row")
    parser.add_argument("--budget", type=float, default=None, help="seconds of timed rounds per row")
    args = parser.parse_args(argv)

    min_repeats, max_repeats = (3, 10) if args.quick else (3, 400)
    if args.repeats:
        min_repeats = max_repeats = args.repeats
    warmup = 1 if args.quick else 2
    budget_s = args.budget or (2.0 if args.quick else 10.0)
    torch.set_num_threads(THREADS)
    limit_malloc_caching()
    methods = build_methods()
    if args.methods:
        wanted = [m.strip().lower() for m in args.methods.split(",") if m.strip()]
        methods = [m for m in methods if any(s in m.name.lower() for s in wanted)]
    names = ["small", "resnet18"] if args.workload == "all" else [args.workload]

    load_before = os.getloadavg()
    share = CpuShare()
    started = time.perf_counter()
    results = []
    for name in names:
        result = run_workload(make_workload(name), methods, min_repeats, max_repeats, warmup, budget_s)
        results.append(result)
        print(render(result), flush=True)
        print(flush=True)
    load_after = os.getloadavg()
    others = share.others()
    header = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "repeats": [min_repeats, max_repeats],
        "budget_s": budget_s,
        "warmup": warmup,
        "load_before": load_before,
        "load_after": load_after,
        "wall_s": time.perf_counter() - started,
        "other_processes_cpu_share": others,
    }
    others_text = "unknown" if others is None else f"{100 * others:.1f}%"
    print(
        f"torch {header['torch']}, {header['threads']} threads of {header['cpu_count']} CPUs; "
        f"medians of {min_repeats}-{max_repeats} interleaved rounds (about {budget_s:.0f} s per row) after up to "
        f"{warmup} warm-up round(s); {header['wall_s']:.0f} s; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f}; CPU used by other processes during the run: {others_text} of the machine"
    )
    if others is not None and others > OTHERS_WARNING:
        print(
            f"WARNING: other processes used {100 * others:.0f}% of the CPUs during the run, so these timings are "
            "unreliable (2 busy-waiting OpenMP threads slow down by 10x and more when oversubscribed). Re-run on an "
            "idle machine."
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"environment": header, "workloads": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
