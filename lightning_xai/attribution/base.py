"""Explainer base class, target handling, layer lookup and the ``observe`` context manager.

Every explainer in :mod:`lightning_xai.attribution` derives from :class:`Explainer`: it holds
configuration only and receives the model at call time::

    saliency = GradCAM(layer="layer4")(model, inputs, target)

The computation runs inside :func:`observe`, which leaves ``torch.inference_mode`` (Lightning's
validation hooks run inside it), enables autograd, puts the model in eval mode and restores every
piece of state a training run depends on when it exits, on every exit path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import importlib
import re
import warnings
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from lightning_xai.errors import LightningXAIError

__all__ = [
    "DEFAULT_CHUNK_ELEMENTS",
    "OutputType",
    "TargetType",
    "Explainer",
    "ExplainContext",
    "accumulation_dtype",
    "default_chunk_rows",
    "model_dtype",
    "observe",
    "observing",
    "register_own_forward_hook",
    "resolve_target",
    "run_chunked",
    "select_output",
    "select_scores",
    "value_bounds",
    "target_indices",
    "targets_checked",
    "get_layer",
    "last_conv_layer_name",
    "layer_names",
    "model_device",
    "chunks",
    "register_explainer",
    "get_explainer",
    "available_explainers",
]

TargetType = Union[int, Tensor, None]
"""An ``int`` class index for the whole batch, a ``[B]`` tensor of indices, or ``None`` for the
predicted class of each input."""

OutputType = Union[int, str, Callable[[Any], Tensor], None]
"""How to find the ``[B, C]`` scores in a model's raw output (see :func:`select_output`): ``None``
(the output is the scores tensor), an ``int`` index into a tuple or list, a ``str`` key of a dict
or attribute of a dataclass / named tuple, or a callable ``raw -> scores``."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------------------------
# model outputs
# --------------------------------------------------------------------------------------------
_OUTPUT_HINT = (
    "pass `output=` to the explainer call to pick the [B, C] scores: an int index for a tuple or list, "
    "a str key or attribute name for a dict, dataclass or named tuple, or a callable mapping the raw "
    'output to the scores, e.g. `explainer(model, inputs, target, output="logits")`'
)


def _fields(raw: Any) -> list[str]:
    if isinstance(raw, Mapping):
        return [repr(k) for k in raw]
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        return [repr(f.name) for f in dataclasses.fields(raw)]
    if isinstance(raw, tuple) and hasattr(raw, "_fields"):
        return [repr(f) for f in raw._fields]
    return []


def check_output(output: object) -> OutputType:
    """Return ``output`` if it is a valid ``output=`` selector (see :data:`OutputType`).

    Raises:
        TypeError: ``output`` is not None, an int, a str or a callable.
    """
    if output is None or callable(output) or isinstance(output, str):
        return output  # type: ignore[return-value]
    if isinstance(output, int) and not isinstance(output, bool):
        return output
    raise TypeError(
        "Expected argument `output` to be None, an int index, a str key or attribute, or a callable, "
        f"but got {output!r} of type {type(output).__name__}."
    )


def select_output(raw: Any, output: OutputType = None) -> Tensor:
    """The scores tensor in a model's raw output.

    Args:
        raw: What the model's forward returned.
        output: ``None`` (``raw`` must be a tensor), an ``int`` index into a tuple or list, a
            ``str`` key of a mapping or attribute of any other object (dataclass, named tuple),
            or a callable ``raw -> Tensor``.

    Returns:
        The selected tensor (unchanged: no copy, no detach).

    Raises:
        TypeError: ``raw`` is not a tensor and ``output`` is None (the message says how to use
            ``output=``), ``output`` has an unsupported type, or the selection is not a tensor.
        ValueError: the index, key or attribute does not exist (the message lists what does).

    Examples:
        >>> raw = {"logits": torch.zeros(2, 3), "features": torch.zeros(2, 8)}
        >>> select_output(raw, "logits").shape
        torch.Size([2, 3])
        >>> select_output((torch.ones(2, 5), None), 0).shape
        torch.Size([2, 5])
        >>> select_output(raw, lambda out: out["logits"] * 2).shape
        torch.Size([2, 3])
    """
    check_output(output)
    if output is None:
        if isinstance(raw, Tensor):
            return raw
        fields = _fields(raw)
        found = f" (with fields {', '.join(fields)})" if fields else ""
        raise TypeError(
            f"The model returned a {type(raw).__name__}{found}, not a [B, C] scores tensor: {_OUTPUT_HINT}."
        )
    if callable(output):
        selected = output(raw)
        what = "the `output` callable's result"
    elif isinstance(output, int):
        if not isinstance(raw, (tuple, list)):
            raise ValueError(
                f"`output={output}` indexes a tuple or list, but the model returned a {type(raw).__name__}; {_OUTPUT_HINT}."
            )
        if not -len(raw) <= output < len(raw):
            raise ValueError(f"`output={output}` is out of range for a model output of length {len(raw)}.")
        selected = raw[output]
        what = f"output[{output}]"
    else:
        if isinstance(raw, Mapping):
            if output not in raw:
                keys = [str(k) for k in raw]
                close = difflib.get_close_matches(output, keys, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"`output={output!r}` is not a key of the model's output.{hint} Keys: {keys}.")
            selected = raw[output]
        else:
            if not hasattr(raw, output):
                names = _fields(raw)
                shown = f" Fields: {', '.join(names)}." if names else ""
                raise ValueError(f"The model's output ({type(raw).__name__}) has no attribute {output!r}.{shown}")
            selected = getattr(raw, output)
        what = f"output {output!r}"
    if not isinstance(selected, Tensor):
        raise TypeError(f"Expected {what} to be the [B, C] scores tensor, but got a {type(selected).__name__}.")
    return selected


# --------------------------------------------------------------------------------------------
# observe: the one context manager every computation runs inside
# --------------------------------------------------------------------------------------------
@dataclass
class ExplainContext:
    """Bookkeeping handed to an explainer while it runs inside :func:`observe`.

    Hooks registered through :meth:`add_hook` (or appended to :attr:`handles`) are removed when
    the context exits, whatever the exit path.
    """

    model: nn.Module
    device: torch.device
    dtype: torch.dtype | None = None
    handles: list[RemovableHandle] = field(default_factory=list)

    def add_hook(self, handle: RemovableHandle) -> RemovableHandle:
        """Track ``handle`` so it is removed when the context exits."""
        self.handles.append(handle)
        return handle

    def prepare(self, inputs: Tensor) -> Tensor:
        """A fresh leaf copy of ``inputs`` on the model's device, in the model's floating-point
        dtype (a ``bf16-true`` model gets bf16 inputs), that requires grad.

        Works on inference tensors (created under ``torch.inference_mode``) too.
        """
        dtype = self.dtype if self.dtype is not None and inputs.is_floating_point() else inputs.dtype
        return inputs.detach().to(device=self.device, dtype=dtype).clone().requires_grad_(True)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (or buffer); ``None`` if it has none."""
    for tensor in model.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    for tensor in model.buffers():
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype sums and returned maps use: float32 for float16/bfloat16, else ``dtype``.

    Examples:
        >>> accumulation_dtype(torch.bfloat16), accumulation_dtype(torch.float64)
        (torch.float32, torch.float64)
    """
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _autocast_off(device: torch.device) -> contextlib.ExitStack:
    """Disable an enclosing ``torch.autocast`` on the CPU and on ``device``'s type."""
    stack = contextlib.ExitStack()
    for kind in dict.fromkeys(("cpu", device.type)):
        try:
            enabled = torch.is_autocast_enabled(kind)
        except (RuntimeError, TypeError):  # a device type autocast does not know
            continue
        if enabled:
            stack.enter_context(torch.autocast(kind, enabled=False))
    return stack


_OBSERVING: ContextVar[int] = ContextVar("lightning_xai_observing", default=0)


def observing() -> bool:
    """``True`` inside an :func:`observe` block (of any model) in this thread / context.

    Forward hooks that watch training (a
    :class:`~lightning_xai.callbacks.PatternEstimator`'s) use it to ignore the forward passes of
    explanations, metrics and other monitors, which all run inside :func:`observe`.
    """
    return _OBSERVING.get() > 0


def register_own_forward_hook(module: nn.Module, hook: Callable[[nn.Module, Any, Any], Any]) -> RemovableHandle:
    """``module.register_forward_hook(hook)``, but ``hook`` runs only on ``module`` itself.

    ``copy.deepcopy`` copies a module's hooks with it, and the copied hook is the same function,
    bound to the same owner: without this guard, a copy's forward passes (a sanity check's
    randomised copy, the fragility attack's softplus twin, an EMA/SWA copy) would reach the
    owner's hook. The guard is one identity check per call (a weak reference: the hook keeps no
    module alive).

    Examples:
        >>> import copy
        >>> seen = []
        >>> layer = nn.Linear(2, 2)
        >>> handle = register_own_forward_hook(layer, lambda m, args, out: seen.append(m))
        >>> _ = layer(torch.ones(1, 2)), copy.deepcopy(layer)(torch.ones(1, 2))
        >>> seen == [layer]
        True
        >>> handle.remove()
    """
    owner = weakref.ref(module)

    def own_hook(mod: nn.Module, args: Any, output: Any) -> Any:
        if mod is owner():
            return hook(mod, args, output)
        return None

    return module.register_forward_hook(own_hook)


@contextlib.contextmanager
def observe(model: nn.Module, *, eval_mode: bool = True, output: OutputType = None) -> Iterator[ExplainContext]:
    """Run an explanation without perturbing training.

    Inside the block: ``torch.inference_mode`` is off, autograd is on, the model is in eval mode
    (unless ``eval_mode=False``) and its parameters do not require grad (so no parameter ``.grad``
    can be written; explainers differentiate w.r.t. inputs and activations only). On exit, on
    every path: every module's ``training`` flag, every parameter's ``requires_grad`` and
    ``.grad``, BatchNorm running statistics and the CPU/CUDA RNG states are restored, and every
    hook registered through the yielded :class:`ExplainContext` is removed.
    While the block runs, :func:`observing` is ``True``.

    **Precision.** An enclosing ``torch.autocast`` (a ``bf16-mixed`` training step) is switched
    off inside the block when the model's parameters are float32 or float64, so explanations are
    computed in the model's own precision, as in an fp32 run; a model whose parameters are
    float16/bfloat16 (``bf16-true``, ``16-true``) runs in that dtype, with autocast left as it is.
    :meth:`ExplainContext.prepare` casts inputs to the model's dtype.

    **Outputs.** With ``output`` (see :func:`select_output`), a forward hook on ``model`` replaces
    its raw output (a tuple, dict or dataclass) with the selected scores for the whole block, so
    ``model(x)`` returns ``[B, C]`` scores; sub-module names are unchanged.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 2))
        >>> with observe(model) as ctx:
        ...     x = ctx.prepare(torch.randn(3, 4))
        ...     grad, = torch.autograd.grad(model(x)[:, 0].sum(), x)
    """
    modules = list(model.modules())
    modes = [m.training for m in modules]
    # model.parameters() without a second walk over the module tree (shared parameters once)
    params = list({id(p): p for m in modules for p in m._parameters.values() if p is not None}.values())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    rng = _rng_state()
    dtype = model_dtype(model)
    ctx = ExplainContext(model=model, device=model_device(model), dtype=dtype)
    bn_stats: list[tuple[nn.Module, dict[str, Tensor]]] = []
    low_precision = any(p.dtype in _LOW_PRECISION for p in params)
    depth = _OBSERVING.set(_OBSERVING.get() + 1)
    try:
        with torch.inference_mode(False), torch.enable_grad(), contextlib.ExitStack() as stack:
            if not low_precision:
                stack.enter_context(_autocast_off(ctx.device))
            if output is not None:
                check_output(output)
                ctx.add_hook(model.register_forward_hook(lambda module, args, raw: select_output(raw, output)))
            if eval_mode and any(modes):
                model.eval()
            # Only a BatchNorm still in training mode can update its running statistics.
            bn_stats = [
                (m, {k: v.clone() for k, v in m.named_buffers(recurse=False) if v is not None})
                for m in modules
                if isinstance(m, _BatchNorm) and m.training
            ]
            for p in params:
                p.requires_grad_(False)
            yield ctx
    finally:
        _OBSERVING.reset(depth)
        for handle in ctx.handles:
            handle.remove()
        ctx.handles.clear()
        for m, mode in zip(modules, modes):
            if m.training != mode:
                object.__setattr__(m, "training", mode)  # what nn.Module.train does, minus the recursion
        with torch.no_grad():
            for p, flag, grad in zip(params, requires_grad, grads):
                p.requires_grad_(flag)
                if p.grad is not grad:
                    p.grad = grad
            for m, buffers in bn_stats:
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
        _set_rng_state(rng)


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
def target_indices(target: int | Tensor, batch: int, device: torch.device | str) -> Tensor:
    """An explicit ``target`` as a ``[batch]`` long tensor on ``device``, checked for type and shape.

    The class range needs the model's outputs: :func:`resolve_target` checks it.

    Raises:
        TypeError: ``target`` is not an int or an integer tensor.
        ValueError: a tensor ``target`` holds neither one index nor one per input.
    """
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise TypeError(f"Expected `target` to be an int, a [B] tensor or None, but got {type(target).__name__}.")
    if isinstance(target, int):
        return torch.full((batch,), target, dtype=torch.long, device=device)
    if target.is_floating_point() or target.is_complex():
        raise TypeError(f"Expected an integer `target` tensor, but got dtype {target.dtype}.")
    resolved = target.detach().to(device=device, dtype=torch.long).reshape(-1)
    if resolved.is_inference():  # made under an outer inference_mode: autograd may not save it
        with torch.inference_mode(False):
            resolved = resolved.clone()
    if resolved.numel() == 1:
        return resolved.expand(batch)
    if resolved.numel() != batch:
        raise ValueError(
            f"Expected `target` to hold one class index per input ({batch}), but got shape {tuple(target.shape)}."
        )
    return resolved


_TARGETS_CHECKED: ContextVar[bool] = ContextVar("lightning_xai_targets_checked", default=False)


def _format_values(values: list[int], limit: int = 5) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def check_target_range(target: Tensor, classes: int) -> None:
    """Raise if a class index of the ``[B]`` ``target`` is outside ``[0, classes)``.

    One device-to-host synchronisation. Inside :func:`run_chunked`, after the first chunk, the
    check is skipped: the targets of one call are checked once.

    Raises:
        ValueError: an index is out of range (the message shows the offending values, truncated).
    """
    if _TARGETS_CHECKED.get() or target.numel() == 0:
        return
    bad = (target < 0) | (target >= classes)
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()
        raise ValueError(
            f"Expected `target` class indices in [0, {classes}), but got {len(values)} distinct out-of-range "
            f"values: {_format_values(values)}."
        )


@contextlib.contextmanager
def targets_checked(checked: bool = True) -> Iterator[None]:
    """Inside the block (when ``checked``), :func:`check_target_range` is skipped: for targets
    already checked, or predicted by ``argmax``, so that nested calls do not sync again."""
    if not checked:
        yield
        return
    token = _TARGETS_CHECKED.set(True)
    try:
        yield
    finally:
        _TARGETS_CHECKED.reset(token)


def resolve_target(target: TargetType, outputs: Tensor) -> Tensor:
    """Turn ``target`` into a ``[B]`` long tensor of class indices on ``outputs``' device.

    Args:
        target: An ``int``, a ``[B]`` (or scalar) integer tensor, or ``None`` for the argmax of
            ``outputs``.
        outputs: The model's ``[B, C]`` outputs.

    Raises:
        ValueError: ``outputs`` is not ``[B, C]`` or a class index is outside ``[0, C)``.
        TypeError: ``target`` has an unsupported type.
    """
    if outputs.ndim != 2:
        raise ValueError(f"Expected the model to return [batch, classes] scores, but got shape {tuple(outputs.shape)}.")
    batch, classes = outputs.shape
    if target is None:
        return outputs.detach().argmax(dim=1)
    resolved = target_indices(target, batch, outputs.device)
    check_target_range(resolved, classes)
    return resolved


def select_scores(outputs: Tensor, target: Tensor) -> Tensor:
    """The ``[B]`` scores ``outputs[i, target[i]]``."""
    return outputs.gather(1, target.view(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every sub-module of ``model`` (the root excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str, *, method: str = "explainer") -> nn.Module:
    """Look up a sub-module by dotted name, with an error that lists the valid names.

    Raises:
        ValueError: ``name`` is not a sub-module of ``model``.
    """
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = layer_names(model)
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(repr(n) for n in names[:40]) + (", ..." if len(names) > 40 else "")
        raise ValueError(
            f"{method}: the model has no layer named {name!r}.{hint} Valid layer names: {shown}."
        ) from None


def last_conv_layer_name(model: nn.Module, *, method: str = "explainer") -> str:
    """The dotted name of the last ``nn.Conv2d`` in ``model.named_modules()`` order.

    Raises:
        ValueError: the model has no ``nn.Conv2d``.
    """
    name = None
    for n, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            name = n
    if name is None:
        raise ValueError(
            f"{method}: the model has no nn.Conv2d layer; pass `layer=` with the dotted name of the "
            f"layer to explain. Valid layer names: {', '.join(layer_names(model)[:40])}."
        )
    return name


# --------------------------------------------------------------------------------------------
# batching
# --------------------------------------------------------------------------------------------
DEFAULT_CHUNK_ELEMENTS = 2**22
"""Input elements per forward/backward chunk of the batched explainers (Integrated Gradients,
NoiseTunnel) by default: ``2**22 // numel(x_i)`` rows, 27 images of 3 x 224 x 224 (16 MiB of
float32 input). Measured on resnet50 (random init, 224 x 224, CPU): a chunk's peak is about 80 MiB
per image of activations kept for the backward pass, so 27 rows stay near 2.3 GiB."""


def chunks(total: int, size: int | None) -> Iterator[slice]:
    """Slices ``[start, stop)`` covering ``range(total)`` in pieces of at most ``size``.

    Examples:
        >>> [(s.start, s.stop) for s in chunks(5, 2)]
        [(0, 2), (2, 4), (4, 5)]
    """
    size = total if not size or size <= 0 else size
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def default_chunk_rows(inputs: Tensor, elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Rows of ``inputs``' shape per chunk so a chunk holds at most ``elements`` input elements
    (at least 1).

    Examples:
        >>> default_chunk_rows(torch.zeros(8, 3, 224, 224))
        27
    """
    return max(1, elements // max(1, inputs[0].numel()))


def run_chunked(total: int, size: int, body: Callable[[slice], None], *, method: str, adaptive: bool) -> None:
    """The chunk loop of the batched explainers: ``body(rows)`` for consecutive slices covering
    ``range(total)``, at most ``size`` rows each.

    ``body`` must fold its results into its accumulators as its last step, so a chunk that fails
    leaves nothing behind. Targets are range-checked once: after the first chunk succeeded,
    :func:`check_target_range` is skipped for the rest of the loop (no device sync per chunk).

    On ``torch.OutOfMemoryError``: with ``adaptive`` (the chunk size is a default), the failed
    slice is retried at half the size, with a warning, down to one row; otherwise (a size the user
    chose, or one row) the error propagates (and :class:`Explainer` re-raises it naming
    ``internal_batch_size``).

    Args:
        total: Number of rows.
        size: Most rows per call of ``body``.
        body: Computes and folds the rows of one slice.
        method: Name used in the warning.
        adaptive: Halve the chunk on out-of-memory instead of raising.

    Examples:
        >>> seen = []
        >>> run_chunked(5, 2, lambda rows: seen.append((rows.start, rows.stop)), method="demo", adaptive=False)
        >>> seen
        [(0, 2), (2, 4), (4, 5)]
    """
    size = max(1, int(size))
    start = 0
    token = None
    try:
        while start < total:
            stop = min(start + size, total)
            try:
                body(slice(start, stop))
            except torch.OutOfMemoryError:
                if not adaptive or stop - start <= 1:
                    raise
                failed = True
            else:
                failed = False
            if failed:  # outside the except block: the failed chunk's tensors are released
                size = max(1, (stop - start) // 2)
                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.empty_cache()
                warnings.warn(
                    f"{method}: out of memory at {stop - start} rows per chunk; retrying at {size}. Pass "
                    f"`internal_batch_size={size}` (or smaller) to start there.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            start = stop
            if token is None and not _TARGETS_CHECKED.get():
                token = _TARGETS_CHECKED.set(True)
    finally:
        if token is not None:
            _TARGETS_CHECKED.reset(token)


def value_bounds(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``(min, max - min)`` over every non-batch dimension, each ``[B, 1, ..., 1]``.

    Examples:
        >>> low, spread = value_bounds(torch.tensor([[1.0, 3.0], [0.0, -2.0]]))
        >>> low.flatten().tolist(), spread.flatten().tolist()
        ([1.0, -2.0], [2.0, 2.0])
    """
    flat = inputs.detach().flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    shape = (-1, *([1] * (inputs.ndim - 1)))
    return low.view(shape), (high - low).view(shape)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Explainer]] = {}

# Explainers registered by modules outside this package (which import it): the module is imported
# on the first lookup of the name, so importing lightning_xai.attribution never imports them.
_DEFERRED: dict[str, str] = {"masking_model": "lightning_xai.modules.masking"}


def _snake(name: str) -> str:
    name = name.replace("CAM", "Cam")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def register_explainer(cls: type[Explainer], name: str | None = None) -> type[Explainer]:
    """Register ``cls`` under ``name`` (default: the class name in snake case, ``GradCAM`` ->
    ``"grad_cam"``). Usable as a decorator."""
    key = name or cls.__dict__.get("registry_name") or _snake(cls.__name__)
    existing = _REGISTRY.get(key)
    if existing is not None and existing is not cls and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"Explainer name {key!r} is already registered to {existing.__qualname__}.")
    _REGISTRY[key] = cls
    cls.registry_name = key
    return cls


def get_explainer(name: str, **kwargs: Any) -> Explainer:
    """Build a registered explainer by name: ``get_explainer("grad_cam", layer="layer4")``.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if name in _DEFERRED and name not in _REGISTRY:
        importlib.import_module(_DEFERRED[name])  # registers it
    try:
        cls = _REGISTRY[name]
    except KeyError:
        known = available_explainers()
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"Unknown explainer {name!r}.{hint} Known explainers: {', '.join(known)}.") from None
    return cls(**kwargs)


def available_explainers() -> list[str]:
    """The names :func:`get_explainer` accepts."""
    return sorted({*_REGISTRY, *_DEFERRED})


# --------------------------------------------------------------------------------------------
# the base class
# --------------------------------------------------------------------------------------------
class Explainer(ABC):
    """Base of every attribution method: configuration only, the model comes at call time.

    Subclasses implement :meth:`_attribute` (inputs arrive as a fresh leaf tensor that requires
    grad, on the model's device, inside :func:`observe`) and, when they have configuration that
    depends on the model (a layer name), :meth:`check`.

    Class attributes describe the output so renderers and callbacks need not know the method:

    * ``region``: ``True`` for methods returning ``[B, 1, H, W]`` maps upsampled to the input
      size (CAM family, masks); ``False`` for input-shaped pixel attributions.
    * ``signed``: ``True`` when the map has meaningful negative values (diverging colour map).
    * ``registry_name``: the name :func:`get_explainer` knows the class by.

    **Precision.** Inputs are cast to the model's floating-point dtype, so a ``bf16-true`` or
    ``16-true`` model gets bf16/fp16 inputs and runs in its own dtype; sums over many passes
    (Integrated Gradients' path sum, NoiseTunnel's moments, CAM channel weights) accumulate in
    float32, and maps are returned in float32 (float64 stays float64). Under an enclosing
    ``torch.autocast`` (a ``bf16-mixed`` step), a model with float32 parameters is explained with
    autocast *off*: maps are those of the float32 model, not of its bf16 shadow (on an H200,
    Saliency under bf16 autocast differed from float32 by 36% of the map's maximum). See
    :func:`observe`.

    **Model outputs.** Every call accepts ``output=`` (:func:`select_output`) for models whose
    forward returns a tuple, dict or dataclass.

    Examples:
        >>> class TwoHeads(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = nn.Linear(4, 3)
        ...     def forward(self, x):
        ...         return {"logits": self.body(x), "aux": x.sum(1)}
        >>> from lightning_xai.attribution import Saliency
        >>> Saliency()(TwoHeads(), torch.rand(2, 4), target=0, output="logits").shape
        torch.Size([2, 4])
    """

    region: ClassVar[bool] = False
    signed: ClassVar[bool] = True
    registry_name: ClassVar[str | None] = None
    _checks_while_attributing: ClassVar[bool] = False
    """``True`` where ``_attribute`` itself runs every check of :meth:`check` (with the same
    errors), so a call need not walk the model twice."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not getattr(cls, "__abstractmethods__", None) and not cls.__name__.startswith("_"):
            register_explainer(cls)

    # -- public API ---------------------------------------------------------------------------
    def __call__(
        self, model: nn.Module, inputs: Tensor, target: TargetType = None, *, output: OutputType = None
    ) -> Tensor:
        """Explain ``model``'s decision for ``inputs``.

        Args:
            model: Any ``nn.Module`` mapping ``[B, ...]`` inputs to ``[B, C]`` scores (or to a
                tuple, dict or dataclass holding them: see ``output``).
            inputs: A ``[B, ...]`` batch (an inference tensor is fine); cast to the model's
                floating-point dtype.
            target: Class to explain: ``int``, ``[B]`` tensor, or ``None`` for the predicted class.
            output: Where the scores are in the model's output (:func:`select_output`): ``None``
                (the output is the tensor), an ``int`` index, a ``str`` key or attribute, or a
                callable ``raw -> [B, C] scores``.

        Returns:
            A detached tensor on the model's device, at least float32 (a bf16 model gives float32
            maps): input-shaped for pixel methods, ``[B, 1, H, W]`` for region methods.

        Raises:
            torch.OutOfMemoryError: the device ran out of memory; the message names the knob
                (``internal_batch_size``) where the explainer has one.
        """
        return self._run(model, inputs, lambda x, ctx: self._attribute(model, x, target, ctx), output=output)

    def _run(
        self,
        model: nn.Module,
        inputs: Tensor,
        compute: Callable[[Tensor, ExplainContext], Any],
        *,
        output: OutputType = None,
    ) -> Any:
        """Validate ``inputs``, run ``compute(leaf_inputs, ctx)`` inside :func:`observe` with the
        error wrapping of :meth:`__call__`, and detach the result (a tensor or a tuple of tensors),
        cast to at least float32.

        For public entry points besides :meth:`__call__` (``IntegratedGradients.with_delta``).
        """
        name = type(self).__name__
        if not isinstance(inputs, Tensor):
            raise TypeError(f"{name}: expected `inputs` to be a Tensor, got {type(inputs).__name__}.")
        if inputs.ndim < 2:
            raise ValueError(f"{name}: expected a batch of inputs [B, ...], got shape {tuple(inputs.shape)}.")
        if not inputs.is_floating_point():
            raise TypeError(f"{name}: expected floating-point inputs, got dtype {inputs.dtype}.")
        check_output(output)
        if not self._checks_while_attributing:
            self.check(model)
        with observe(model, output=output) as ctx:
            if output is None and not isinstance(model, torch.jit.ScriptModule):  # no hooks on TorchScript
                ctx.add_hook(model.register_forward_hook(_require_tensor_output))
            x = ctx.prepare(inputs)
            try:
                result = compute(x, ctx)
            except (ValueError, TypeError, LightningXAIError):
                raise
            except torch.OutOfMemoryError as err:
                raise torch.OutOfMemoryError(self._oom_message(inputs, err)) from err
            except RuntimeError as err:
                raise LightningXAIError(
                    f"{name} failed on inputs of shape {tuple(inputs.shape)}{self._where()}: {err}"
                ) from err
        if isinstance(result, tuple):
            return tuple(_finish(r) if isinstance(r, Tensor) else r for r in result)
        return _finish(result)

    def _oom_message(self, inputs: Tensor, err: BaseException) -> str:
        name = type(self).__name__
        knob = _find_knob(self)
        if knob is not None:
            owner, value = knob
            hint = (
                f"lower `internal_batch_size` of {owner} (now {value}), or explain fewer inputs per call"
                if value is not None
                else f"pass a small `internal_batch_size` to {owner} (its default adapts to out-of-memory "
                "by halving, down to one row), or explain fewer inputs per call"
            )
        else:
            hint = "explain fewer inputs per call"
        return f"{name}: out of memory on inputs of shape {tuple(inputs.shape)}{self._where()}; {hint}. ({err})"

    def check(self, model: nn.Module) -> None:
        """Validate this explainer's configuration against ``model`` (layer names, head shape).

        Called by callbacks at ``setup`` so bad configuration fails before training starts, and by
        :meth:`__call__`. Raises ``ValueError`` with the valid choices on a mismatch.
        """
        return None

    # -- for subclasses -----------------------------------------------------------------------
    @abstractmethod
    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        """Compute the attribution; ``inputs`` is a leaf that requires grad, inside ``observe``."""

    def _where(self) -> str:
        layer = getattr(self, "layer", None)
        return f" at layer {layer!r}" if layer else ""

    def _config(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and repr(self) == repr(other)

    def __hash__(self) -> int:
        return hash(repr(self))


def _require_tensor_output(module: nn.Module, args: Any, raw: Any) -> None:
    """Forward hook on the root model: a non-tensor output raises the ``output=`` hint."""
    if not isinstance(raw, Tensor):
        select_output(raw, None)


def _finish(result: Tensor) -> Tensor:
    result = result.detach()
    if result.is_floating_point() and result.dtype in _LOW_PRECISION:
        return result.float()
    return result


def _find_knob(explainer: Explainer) -> tuple[str, int | None] | None:
    """``(class name, internal_batch_size)`` of the explainer, or of the one it wraps, that has the knob."""
    seen = 0
    current: Any = explainer
    while current is not None and seen < 8:
        if hasattr(current, "internal_batch_size"):
            return type(current).__name__, current.internal_batch_size
        current = getattr(current, "explainer", None)
        seen += 1
    return None


def forward_scores(
    model: nn.Module | Callable[[Tensor], Tensor], inputs: Tensor, target: TargetType
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass: ``(scores [B], target [B], outputs [B, C])`` for ``target`` (resolved
    against the outputs when ``None``)."""
    outputs = model(inputs)
    resolved = resolve_target(target, outputs)
    return select_scores(outputs, resolved), resolved, outputs


def input_gradient(model: nn.Module, inputs: Tensor, target: TargetType) -> tuple[Tensor, Tensor]:
    """``(d score / d inputs, resolved target)`` with one forward and one backward pass.

    Each sample's score depends on that sample only (models in eval mode), so the gradient of the
    summed scores is the per-sample gradient.
    """
    scores, resolved, _ = forward_scores(model, inputs, target)
    (grad,) = torch.autograd.grad(scores.sum(), inputs)
    return grad, resolved


def expand_target(target: Tensor, repeats: int) -> Tensor:
    """Repeat a resolved ``[B]`` target for ``repeats`` stacked copies of the batch (``[repeats*B]``,
    copy-major order)."""
    return target.repeat(repeats)


__all__ += ["forward_scores", "input_gradient", "expand_target"]
