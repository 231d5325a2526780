"""Shared machinery of the training-data influence methods: losses, checkpoints, parameter
selection, data streaming and per-example gradients with ``torch.func``.

No Lightning import here. Everything runs inside :func:`~lightning_xai.attribution.base.observe`
(the model is left exactly as it was given); the model's weights are never written: a checkpoint
is applied through ``torch.func.functional_call``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call as _torch_functional_call
from torch.func import grad, vmap
from torch.utils.data import DataLoader, Dataset, RandomSampler

from lightning_xai._validation import check_float
from lightning_xai.attribution.base import ExplainContext, get_layer
from lightning_xai.data.probe import split_batch
from lightning_xai.errors import LightningXAIError
from lightning_xai.influence._projection import GradientSketch

__all__ = [
    "Checkpoint",
    "DataSource",
    "LOSSES",
    "LossType",
    "GradientFeatures",
    "PerExampleGradients",
    "check_checkpoints",
    "check_data",
    "check_layers",
    "check_targets",
    "checked_batches",
    "wrap_errors",
    "count_examples",
    "functional_call",
    "iter_batches",
    "load_checkpoint",
    "model_state",
    "resolve_loss",
    "selected_parameters",
    "LAST_LINEAR",
    "GradientLayers",
    "check_gradient_layers",
    "resolve_gradient_layers",
]

LAST_LINEAR = "last_linear"
"""``gradient_layers=LAST_LINEAR``: the parameters of the last ``nn.Linear`` (in ``named_modules``
order) that has trainable parameters: the network's head, the cheap default of the monitors."""

GradientLayers = Union[str, Sequence[str], None]
"""Whose parameter gradients count: :data:`LAST_LINEAR`, ``None`` (every trainable parameter) or
module names."""

LossType = Union[str, Callable[[Tensor, Tensor], Tensor]]
"""A loss name from :data:`LOSSES` or a callable ``loss(outputs, targets) -> [B]`` (one value per
example, not reduced)."""

Checkpoint = tuple[Union[Mapping[str, Tensor], str, "os.PathLike[str]"], float]
"""``(state_dict or path, learning_rate)``; a path loads with ``torch.load(weights_only=True)`` and
may hold a plain state dict or a dict with a ``"state_dict"`` entry (a Lightning checkpoint, or the
light checkpoints ``TracInMonitor`` writes)."""

DataSource = Union[Tensor, Dataset, DataLoader]
"""Inputs as a tensor (with a separate targets tensor), or a ``Dataset``/``DataLoader`` yielding
``(x, y)`` pairs (tuples, lists or dicts with the keys :mod:`lightning_xai.data.probe` knows)."""


def _cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def _nll(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.nll_loss(outputs, targets, reduction="none")


def _mse(outputs: Tensor, targets: Tensor) -> Tensor:
    diff = (outputs - targets.to(outputs.dtype).reshape(outputs.shape)) ** 2
    return diff.reshape(diff.shape[0], -1).sum(dim=1)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "cross_entropy": _cross_entropy,
    "nll": _nll,
    "mse": _mse,
}
"""Per-example losses by name: ``cross_entropy`` (logits, class indices), ``nll`` (log-probabilities,
class indices), ``mse`` (summed squared error per example)."""

_CLASS_LOSSES = frozenset({"cross_entropy", "nll"})


def resolve_loss(loss: LossType) -> tuple[str | None, Callable[[Tensor, Tensor], Tensor]]:
    """``(name or None, per-example loss function)`` for a name or a callable.

    Raises:
        ValueError: an unknown loss name (the message lists the known ones).
        TypeError: ``loss`` is neither a string nor callable.
    """
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"Unknown loss {loss!r}. Known losses: {', '.join(sorted(LOSSES))}, or a callable.")
        return loss, LOSSES[loss]
    if callable(loss):
        return None, loss
    raise TypeError(f"Expected `loss` to be a name or a callable, but got {loss!r} of type {type(loss).__name__}.")


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def check_checkpoints(checkpoints: object, method: str) -> list[tuple[Any, float]]:
    """Validate a list of ``(state_dict or path, learning_rate)`` pairs without loading anything.

    Raises:
        ValueError: an empty list, a learning rate that is not positive, a path that does not exist.
        TypeError: not a list of pairs, a source that is neither a mapping nor a path.
    """
    if isinstance(checkpoints, (str, bytes, Mapping)) or not isinstance(checkpoints, Sequence):
        raise TypeError(
            f"{method}: expected `checkpoints` to be a list of (state_dict or path, learning_rate) pairs, "
            f"but got {type(checkpoints).__name__}."
        )
    if len(checkpoints) == 0:
        raise ValueError(f"{method}: expected at least one checkpoint, but got an empty `checkpoints` list.")
    result = []
    for i, item in enumerate(checkpoints):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise TypeError(
                f"{method}: expected checkpoints[{i}] to be a (state_dict or path, learning_rate) pair, but got {item!r}."
            )
        source, lr = item
        lr = check_float(f"checkpoints[{i}] learning rate", lr)
        if lr <= 0:
            raise ValueError(f"{method}: expected checkpoints[{i}] to have a positive learning rate, but got {lr}.")
        if isinstance(source, (str, os.PathLike)):
            if not Path(source).is_file():
                raise ValueError(f"{method}: checkpoints[{i}]: no checkpoint file at {str(source)!r}.")
        elif not isinstance(source, Mapping):
            raise TypeError(
                f"{method}: expected checkpoints[{i}] to hold a state dict or a path, but got {type(source).__name__}."
            )
        result.append((source, lr))
    return result


def load_checkpoint(
    source: Mapping[str, Tensor] | str | os.PathLike[str],
    model: nn.Module,
    device: torch.device,
    method: str,
    index: int = 0,
) -> dict[str, Tensor]:
    """The model's parameters and buffers at a checkpoint, detached, on ``device``.

    Every key of ``model.state_dict()`` must be present (a missing one raises); extra keys are
    ignored. A path is read with ``torch.load(weights_only=True)``.

    Raises:
        ValueError: the checkpoint misses some of the model's parameters or buffers.
    """
    if isinstance(source, (str, os.PathLike)):
        loaded = torch.load(source, map_location=device, weights_only=True)
        if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{method}: checkpoints[{index}] at {str(source)!r} holds no state dict.")
        source = loaded
    needed, fixed = _entries(model)
    missing = [k for k in needed if k not in source]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:8]) + (", ..." if len(missing) > 8 else "")
        extra = [k for k in source if k not in needed][:4]
        hint = f" (it has keys such as {', '.join(repr(k) for k in extra)})" if extra else ""
        raise ValueError(f"{method}: checkpoints[{index}] misses the model's entries {shown}{hint}.")
    state = {k: _usable(source[k].detach().to(device=device, dtype=v.dtype)) for k, v in needed.items()}
    state.update({k: v.detach() for k, v in fixed.items()})
    return state


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """The model's own parameters and buffers (detached), keyed as :func:`load_checkpoint` keys them."""
    needed, fixed = _entries(model)
    return {k: _usable(v.detach()) for k, v in {**needed, **fixed}.items()}


def _entries(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(entries a checkpoint must hold, non-persistent buffers taken from the model)``, each
    shared tensor once under its first name (what ``functional_call`` wants for tied weights)."""
    persistent = set(model.state_dict(keep_vars=True))
    needed: dict[str, Tensor] = dict(model.named_parameters())
    fixed: dict[str, Tensor] = {}
    for name, buffer in model.named_buffers():
        (needed if name in persistent else fixed)[name] = buffer
    return needed, fixed


def _usable(tensor: Tensor) -> Tensor:
    """A tensor autograd may save: inference tensors (made under ``torch.inference_mode``) are cloned."""
    return tensor.clone() if tensor.is_inference() else tensor


def functional_call(model: nn.Module, state: dict[str, Tensor] | tuple[dict[str, Tensor], ...], args: tuple) -> Any:
    """``torch.func.functional_call`` that leaves tied parameters alone.

    With its default ``tie_weights=True``, torch replaces a parameter reachable under two names
    (a module registered twice) by a new tensor object on exit, dropping its ``.grad`` and
    detaching it from the optimizer. Here every distinct ``(module, attribute)`` slot holding a
    given tensor gets the replacement explicitly, with ``tie_weights=False``.
    """
    merged: dict[str, Tensor] = {}
    for part in state if isinstance(state, tuple) else (state,):
        merged.update(part)
    for name, aliases in _aliases(model).items():
        if name in merged:
            for alias in aliases:
                merged[alias] = merged[name]
    return _torch_functional_call(model, merged, args, tie_weights=False, strict=False)


def _aliases(model: nn.Module) -> dict[str, list[str]]:
    """``{first name: other names}`` of tensors held by more than one *module object*
    (the same module under two names is one slot and needs no alias)."""
    first: dict[int, str] = {}
    seen_slots: set[tuple[int, str]] = set()
    aliases: dict[str, list[str]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for attr, tensor in list(module._parameters.items()) + list(module._buffers.items()):
            if tensor is None or (id(module), attr) in seen_slots:
                continue
            seen_slots.add((id(module), attr))
            name = f"{prefix}.{attr}" if prefix else attr
            if id(tensor) in first:
                aliases.setdefault(first[id(tensor)], []).append(name)
            else:
                first[id(tensor)] = name
    return aliases


# --------------------------------------------------------------------------------------------
# parameters
# --------------------------------------------------------------------------------------------
def selected_parameters(model: nn.Module, layers: Sequence[str] | None, method: str) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the parameters whose gradients count.

    ``layers=None``: every parameter that requires grad. Otherwise every parameter of the named
    modules (recursively), frozen or not.

    Raises:
        ValueError: a layer name that does not exist (the message lists the valid ones), or no
            parameter selected.
    """
    if layers is None:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    else:
        ids = {id(p): n for n, p in model.named_parameters()}
        chosen: set[str] = set()
        for layer in layers:
            module = get_layer(model, layer, method=method)
            chosen.update(ids[id(p)] for p in module.parameters() if id(p) in ids)
        names = [n for n, _ in model.named_parameters() if n in chosen]
    if not names:
        where = (
            "the model has no parameter that requires grad"
            if layers is None
            else f"layers {list(layers)} hold no parameter"
        )
        raise ValueError(f"{method}: no parameter to differentiate: {where}.")
    return names


def check_layers(layers: object) -> list[str] | None:
    """``layers`` as a list of names (or ``None``), checked for type."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return [layers]
    if not isinstance(layers, Sequence) or not all(isinstance(n, str) for n in layers) or len(layers) == 0:
        raise TypeError(
            f"Expected argument `layers` to be None or a non-empty list of layer names, but got {layers!r}."
        )
    return list(layers)


def check_gradient_layers(layers: object) -> str | list[str] | None:
    """``gradient_layers`` checked for type: :data:`LAST_LINEAR`, ``None`` or a list of names."""
    if layers == LAST_LINEAR:
        return LAST_LINEAR
    try:
        return check_layers(layers)
    except TypeError:
        raise TypeError(
            f"Expected argument `gradient_layers` to be {LAST_LINEAR!r}, None or a non-empty list of module names, "
            f"but got {layers!r}."
        ) from None


def resolve_gradient_layers(model: nn.Module, layers: str | list[str] | None, method: str) -> list[str] | None:
    """The module names :data:`LAST_LINEAR` stands for in ``model`` (other values unchanged).

    Raises:
        ValueError: ``LAST_LINEAR`` and the model has no ``nn.Linear`` with trainable parameters.
    """
    if layers != LAST_LINEAR:
        return layers  # type: ignore[return-value]
    names = [
        name
        for name, module in model.named_modules()
        if name and isinstance(module, nn.Linear) and any(p.requires_grad for p in module.parameters(recurse=False))
    ]
    if not names:
        raise ValueError(
            f"{method}: gradient_layers={LAST_LINEAR!r} needs an nn.Linear layer with trainable parameters, and the "
            "model has none; pass gradient_layers=None (every trainable parameter) or module names."
        )
    return [names[-1]]


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def count_examples(inputs: DataSource) -> int | None:
    """The number of examples when it is known without reading the data."""
    if isinstance(inputs, Tensor):
        return int(inputs.shape[0])
    if isinstance(inputs, DataLoader):
        try:
            return len(inputs.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    try:
        return len(inputs)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_data(inputs: object, targets: object, name: str, method: str) -> None:
    """Type and length checks of one ``(inputs, targets)`` argument pair, before reading anything."""
    if isinstance(inputs, Tensor):
        if not isinstance(targets, Tensor):
            raise TypeError(
                f"{method}: `{name}` is a tensor, so its targets must be a tensor, but got {type(targets).__name__}."
            )
        if inputs.ndim < 1 or targets.ndim < 1 or inputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"{method}: expected one target per example in `{name}`, but got inputs of shape "
                f"{tuple(inputs.shape)} and targets of shape {tuple(targets.shape)}."
            )
        if inputs.shape[0] == 0:
            raise ValueError(f"{method}: `{name}` is empty.")
        if not inputs.is_floating_point():
            raise TypeError(f"{method}: expected floating-point `{name}`, but got dtype {inputs.dtype}.")
        return
    if isinstance(inputs, (DataLoader, Dataset)):
        if targets is not None:
            raise ValueError(
                f"{method}: `{name}` is a {type(inputs).__name__} yielding (x, y): pass its targets as None."
            )
        if isinstance(inputs, DataLoader) and isinstance(inputs.sampler, RandomSampler):
            raise ValueError(
                f"{method}: `{name}` is a shuffled DataLoader; scores are returned in reading order, so pass one "
                "with shuffle=False (or the Dataset itself)."
            )
        return
    raise TypeError(
        f"{method}: expected `{name}` to be a tensor, a Dataset or a DataLoader, but got {type(inputs).__name__}."
    )


def iter_batches(
    inputs: DataSource, targets: Tensor | None, batch_size: int, device: torch.device, dtype: torch.dtype
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` pieces of at most ``batch_size`` examples, in reading order, on ``device``.

    A tensor is sliced; a ``Dataset`` is read through an unshuffled single-process ``DataLoader``;
    a ``DataLoader``'s batches are split into pieces of at most ``batch_size``. Only one batch is
    held at a time.
    """
    if isinstance(inputs, Tensor):
        assert targets is not None
        for start in range(0, inputs.shape[0], batch_size):
            x = inputs[start : start + batch_size].detach().to(device=device, dtype=dtype)
            yield _usable(x), _usable(targets[start : start + batch_size].detach().to(device))
        return
    loader = inputs if isinstance(inputs, DataLoader) else DataLoader(inputs, batch_size=batch_size, shuffle=False)
    for batch in loader:
        x, y, _ = split_batch(batch)
        if y is None:
            raise ValueError("Expected each batch to hold (x, y) with targets, but found no targets.")
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        for start in range(0, x.shape[0], batch_size):
            yield (
                _usable(x[start : start + batch_size].detach().to(device=device, dtype=dtype)),
                _usable(y[start : start + batch_size].detach().to(device)),
            )


# --------------------------------------------------------------------------------------------
# gradient features
# --------------------------------------------------------------------------------------------
@dataclass
class GradientFeatures:
    """Per-example gradients of a batch, dense or in the last-layer factored form.

    Dense: ``dense`` is ``[B, D]`` (flattened gradients, or their random projection).
    Factored (one linear layer, no projection): the gradient of example ``i`` is the outer
    product ``delta[i] (x) act[i]``, where ``act`` carries a trailing 1 when the layer has a bias,
    so ``<g_i, g_j> = <delta_i, delta_j> * <act_i, act_j>`` without forming any gradient.
    """

    dense: Tensor | None = None
    delta: Tensor | None = None
    act: Tensor | None = None

    def __len__(self) -> int:
        return int((self.dense if self.dense is not None else self.delta).shape[0])  # type: ignore[union-attr]

    def sq_norms(self) -> Tensor:
        """``[B]`` squared gradient norms."""
        if self.dense is not None:
            return (self.dense * self.dense).sum(dim=1)
        assert self.delta is not None and self.act is not None
        return (self.delta * self.delta).sum(dim=1) * (self.act * self.act).sum(dim=1)

    def dot(self, other: GradientFeatures) -> Tensor:
        """``[B_self, B_other]`` gradient dot products."""
        if self.dense is not None and other.dense is not None:
            return self.dense @ other.dense.T
        assert self.delta is not None and other.delta is not None
        return (self.delta @ other.delta.T) * (self.act @ other.act.T)  # type: ignore[operator]

    def rows(self, index: Tensor) -> GradientFeatures:
        if self.dense is not None:
            return GradientFeatures(dense=self.dense[index])
        return GradientFeatures(delta=self.delta[index], act=self.act[index])  # type: ignore[index]

    def flat(self) -> Tensor:
        """The dense ``[B, D]`` gradients (formed from the factors if need be)."""
        if self.dense is not None:
            return self.dense
        assert self.delta is not None and self.act is not None
        return torch.einsum("bo,bi->boi", self.delta, self.act).flatten(1)


class PerExampleGradients:
    """Per-example loss gradients w.r.t. the selected parameters, at any checkpoint.

    Built once per call (inside :func:`observe`): ``features(state, x, y)`` returns the
    :class:`GradientFeatures` of a batch with the model's parameters and buffers replaced by
    ``state`` through ``functional_call``. The generic path is ``vmap(grad(loss))`` over the
    examples and works for any layer type (in eval mode: BatchNorm uses its running statistics,
    its affine parameters count like any other). With one ``nn.Linear`` layer selected, the exact
    last-layer form is used instead: one batched forward, one backward to the layer's output, and
    the gradient kept as (output gradient, input activation) factors.

    A random projection (``projection_dim``) maps every gradient to ``projection_dim`` numbers with
    the seeded :class:`~lightning_xai.influence._projection.GradientSketch` (a count sketch;
    TensorSketch on ``nn.Linear`` layers, so the factored path projects the two factors and never
    forms their outer product). Its dot products are unbiased estimates of the exact ones; it keeps
    4 bytes per parameter, never a ``D x projection_dim`` matrix, and is the same for training and
    test examples, on any device. Per-example gradient memory is ``batch_size x D`` (generic
    path) or ``batch_size x (out + in)`` (factored path), whatever the data size.
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        ctx: ExplainContext,
        projection_dim: int | None = None,
        seed: int = 0,
        layer: str | None = None,
    ) -> None:
        self.model = model
        self.names = names
        self.loss_fn = loss_fn
        self.ctx = ctx
        params = dict(model.named_parameters())
        self.sizes = [params[n].numel() for n in names]
        self.dim = sum(self.sizes)
        self.linear: nn.Linear | None = None
        if layer is not None:
            module = model.get_submodule(layer)
            if isinstance(module, nn.Linear):
                own = [f"{layer}.weight"] + ([f"{layer}.bias"] if module.bias is not None else [])
                if names == own:
                    self.linear = module
        self.layer = layer
        self.projection: GradientSketch | None = None
        if projection_dim is not None:
            self.projection = GradientSketch(model, names, projection_dim, seed, ctx.device)
        self._vmapped = vmap(grad(self._one_loss), in_dims=(None, None, 0, 0))

    # -- generic path ---------------------------------------------------------------------------
    def _one_loss(self, params: dict[str, Tensor], rest: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        out = functional_call(self.model, (params, rest), (x.unsqueeze(0),))
        return self.loss_fn(out, y.unsqueeze(0)).sum()

    def _grads(self, state: dict[str, Tensor], x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """``{name: [B, *shape]}`` per-example gradients of the batch (``vmap(grad)``)."""
        params = {n: state[n] for n in self.names}
        rest = {k: v for k, v in state.items() if k not in params}
        return self._vmapped(params, rest, x, y)

    def _dense(self, state: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        grads = self._grads(state, x, y)
        return torch.cat([grads[n].reshape(x.shape[0], -1) for n in self.names], dim=1)

    # -- last-layer path ------------------------------------------------------------------------
    def _factored(self, state: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor] | None:
        assert self.linear is not None
        seen: list[tuple[Tensor, Tensor]] = []

        def hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
            leaf = output.detach().requires_grad_(True)
            seen.append((args[0].detach(), leaf))
            return leaf

        handle = self.ctx.add_hook(self.linear.register_forward_hook(hook))
        try:
            out = functional_call(self.model, state, (x,))
        finally:
            handle.remove()
        if len(seen) != 1:
            return None  # the layer ran more (or less) than once: use the generic path
        act, leaf = seen[0]
        losses = self.loss_fn(out, y)
        (delta,) = torch.autograd.grad(losses.sum(), leaf)
        if act.ndim != 2:  # a linear layer over [B, ..., in]: sum the per-position outer products
            g_w = torch.einsum("b...o,b...i->boi", delta, act)
            g = [g_w.flatten(1)] + (
                [delta.reshape(delta.shape[0], -1, delta.shape[-1]).sum(1)] if self.linear.bias is not None else []
            )
            return torch.cat(g, dim=1), None  # type: ignore[return-value]
        if self.linear.bias is not None:
            act = torch.cat([act, torch.ones_like(act[:, :1])], dim=1)
        return delta, act

    def features(self, state: dict[str, Tensor], x: Tensor, y: Tensor) -> GradientFeatures:
        """The per-example gradients of the batch ``(x, y)`` at ``state``."""
        if self.linear is not None:
            factored = self._factored(state, x, y)
            if factored is not None:
                delta, act = factored
                if act is None:
                    return self._project(GradientFeatures(dense=delta))
                if self.projection is None:
                    return GradientFeatures(delta=delta, act=act)
                assert self.layer is not None
                return GradientFeatures(dense=self.projection.factored(self.layer, self.linear, delta, act))
        if self.projection is not None:  # sketched parameter by parameter: no [B, D] concatenation
            return GradientFeatures(dense=self.projection.blocks(self._grads(state, x, y)))
        return GradientFeatures(dense=self._dense(state, x, y))

    def _project(self, feats: GradientFeatures) -> GradientFeatures:
        if self.projection is None:
            return feats
        return GradientFeatures(dense=self.projection.flat(feats.flat()))

    # -- checks ---------------------------------------------------------------------------------
    def check_batch(
        self, state: dict[str, Tensor], x: Tensor, y: Tensor, loss_name: str | None, method: str
    ) -> int | None:
        """One forward without gradients: the model returns a batch, the loss one value per
        example, and class targets are in range. Returns the number of classes (``None`` when the
        outputs are not ``[B, C]``). Raises ``ValueError`` otherwise."""
        with torch.no_grad():
            try:
                out = functional_call(self.model, state, (x,))
            except RuntimeError as err:
                raise LightningXAIError(
                    f"{method}: the model failed on inputs of shape {tuple(x.shape)}: {err}"
                ) from err
            if not isinstance(out, Tensor) or out.ndim < 1 or out.shape[0] != x.shape[0]:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"{method}: expected the model to return one row per input, but got {shape}.")
            classes = int(out.shape[1]) if out.ndim == 2 else None
            check_targets(y, classes, loss_name, method)
            losses = self.loss_fn(out, y)
        if not isinstance(losses, Tensor) or losses.shape != (x.shape[0],):
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"{method}: expected the loss to return one value per example (shape [{x.shape[0]}]), but got "
                f"{shape}; use reduction='none'."
            )
        return classes


def check_targets(y: Tensor, classes: int | None, loss_name: str | None, method: str) -> None:
    """Class targets of the built-in classification losses are integers in ``[0, classes)``.

    Raises:
        ValueError: non-integer targets, or a class index out of range.
    """
    if loss_name not in _CLASS_LOSSES:
        return
    if y.is_floating_point() or y.ndim != 1:
        raise ValueError(
            f"{method}: expected [B] integer class targets for loss {loss_name!r}, but got {y.dtype} {tuple(y.shape)}."
        )
    classes = classes or 0
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
        bad = y[(y < 0) | (y >= classes)].unique().tolist()[:8]
        raise ValueError(f"{method}: expected target class indices in [0, {classes}), but got {bad}.")


def checked_batches(
    grads: PerExampleGradients,
    state: dict[str, Tensor],
    inputs: DataSource,
    targets: Tensor | None,
    batch_size: int,
    loss_name: str | None,
    method: str,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The ``(x, y)`` batches of ``inputs`` on the model's device, each checked with
    :meth:`PerExampleGradients.check_batch` before it is handed out; for tensor ``inputs``, every
    target is checked against the first batch's class count before the first batch."""
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), torch.float32)
    device = grads.ctx.device
    batches = iter_batches(inputs, targets, batch_size, device, dtype)
    if isinstance(inputs, Tensor) and targets is not None:
        first = next(batches)
        classes = grads.check_batch(state, first[0], first[1], loss_name, method)
        check_targets(targets.detach().reshape(-1).to(device), classes, loss_name, method)
        yield first
        yield from batches
        return
    classes: int | None = None
    for i, (x, y) in enumerate(batches):
        if i == 0:
            classes = grads.check_batch(state, x, y, loss_name, method)
        else:
            check_targets(y, classes, loss_name, method)
        yield x, y


@contextlib.contextmanager
def wrap_errors(method: str) -> Iterator[None]:
    """Re-raise a ``RuntimeError`` from inside a computation as :class:`LightningXAIError` naming the method."""
    try:
        yield
    except (ValueError, TypeError, LightningXAIError):
        raise
    except RuntimeError as err:
        raise LightningXAIError(f"{method} failed: {err}") from err
