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
import difflib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.hooks import RemovableHandle

from lightning_xai.errors import LightningXAIError

__all__ = [
    "TargetType",
    "Explainer",
    "ExplainContext",
    "observe",
    "resolve_target",
    "select_scores",
    "target_indices",
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
    handles: list[RemovableHandle] = field(default_factory=list)

    def add_hook(self, handle: RemovableHandle) -> RemovableHandle:
        """Track ``handle`` so it is removed when the context exits."""
        self.handles.append(handle)
        return handle

    def prepare(self, inputs: Tensor) -> Tensor:
        """A fresh leaf copy of ``inputs`` on the model's device that requires grad.

        Works on inference tensors (created under ``torch.inference_mode``) too.
        """
        return inputs.detach().to(self.device).clone().requires_grad_(True)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _rng_state() -> tuple[Tensor, list[Tensor] | None]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, list[Tensor] | None]) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def observe(model: nn.Module, *, eval_mode: bool = True) -> Iterator[ExplainContext]:
    """Run an explanation without perturbing training.

    Inside the block: ``torch.inference_mode`` is off, autograd is on, the model is in eval mode
    (unless ``eval_mode=False``) and its parameters do not require grad (so no parameter ``.grad``
    can be written; explainers differentiate w.r.t. inputs and activations only). On exit, on
    every path: every module's ``training`` flag, every parameter's ``requires_grad`` and
    ``.grad``, BatchNorm running statistics and the CPU/CUDA RNG states are restored, and every
    hook registered through the yielded :class:`ExplainContext` is removed.

    Example:
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
    ctx = ExplainContext(model=model, device=model_device(model))
    bn_stats: list[tuple[nn.Module, dict[str, Tensor]]] = []
    try:
        with torch.inference_mode(False), torch.enable_grad():
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
    if resolved.numel() == 1:
        return resolved.expand(batch)
    if resolved.numel() != batch:
        raise ValueError(
            f"Expected `target` to hold one class index per input ({batch}), but got shape {tuple(target.shape)}."
        )
    return resolved


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
    if resolved.numel() and (int(resolved.min()) < 0 or int(resolved.max()) >= classes):
        raise ValueError(f"Expected `target` class indices in [0, {classes}), but got {resolved.tolist()}.")
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
def chunks(total: int, size: int | None) -> Iterator[slice]:
    """Slices ``[start, stop)`` covering ``range(total)`` in pieces of at most ``size``."""
    size = total if not size or size <= 0 else size
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Explainer]] = {}


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
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown explainer {name!r}. Known explainers: {', '.join(sorted(_REGISTRY))}.") from None
    return cls(**kwargs)


def available_explainers() -> list[str]:
    """The names :func:`get_explainer` accepts."""
    return sorted(_REGISTRY)


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
    def __call__(self, model: nn.Module, inputs: Tensor, target: TargetType = None) -> Tensor:
        """Explain ``model``'s decision for ``inputs``.

        Args:
            model: Any ``nn.Module`` mapping ``[B, ...]`` inputs to ``[B, C]`` scores.
            inputs: A ``[B, ...]`` batch (an inference tensor is fine).
            target: Class to explain: ``int``, ``[B]`` tensor, or ``None`` for the predicted class.

        Returns:
            A detached tensor on the model's device: input-shaped for pixel methods,
            ``[B, 1, H, W]`` for region methods.
        """
        return self._run(model, inputs, lambda x, ctx: self._attribute(model, x, target, ctx))

    def _run(self, model: nn.Module, inputs: Tensor, compute: Callable[[Tensor, ExplainContext], Any]) -> Any:
        """Validate ``inputs``, run ``compute(leaf_inputs, ctx)`` inside :func:`observe` with the
        error wrapping of :meth:`__call__`, and detach the result (a tensor or a tuple of tensors).

        For public entry points besides :meth:`__call__` (``IntegratedGradients.with_delta``).
        """
        if not isinstance(inputs, Tensor):
            raise TypeError(f"{type(self).__name__}: expected `inputs` to be a Tensor, got {type(inputs).__name__}.")
        if inputs.ndim < 2:
            raise ValueError(
                f"{type(self).__name__}: expected a batch of inputs [B, ...], got shape {tuple(inputs.shape)}."
            )
        if not inputs.is_floating_point():
            raise TypeError(f"{type(self).__name__}: expected floating-point inputs, got dtype {inputs.dtype}.")
        if not self._checks_while_attributing:
            self.check(model)
        with observe(model) as ctx:
            x = ctx.prepare(inputs)
            try:
                result = compute(x, ctx)
            except (ValueError, TypeError, LightningXAIError):
                raise
            except RuntimeError as err:
                raise LightningXAIError(
                    f"{type(self).__name__} failed on inputs of shape {tuple(inputs.shape)}{self._where()}: {err}"
                ) from err
        if isinstance(result, tuple):
            return tuple(r.detach() if isinstance(r, Tensor) else r for r in result)
        return result.detach()

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


def select_output(raw: Any, output: Any = None) -> Tensor:
    """Pick the ``[B, C]`` scores from a model's raw output.

    Args:
        raw: What the model's forward returned.
        output: ``None`` (``raw`` is the scores), an ``int`` index into a tuple/list, a ``str`` key
            of a mapping or attribute of an object (a dataclass), or a callable ``raw -> scores``.

    Raises:
        TypeError: the selection does not give a tensor; the message says how to use ``output=``.
    """
    if output is None:
        scores = raw
    elif callable(output):
        scores = output(raw)
    elif isinstance(output, int) and isinstance(raw, (tuple, list)):
        scores = raw[output]
    elif isinstance(output, str) and isinstance(raw, dict):
        scores = raw[output]
    elif isinstance(output, str):
        scores = getattr(raw, output)
    else:
        scores = None
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"Expected the model's output to be a [B, C] tensor of scores, but got {type(raw).__name__}. Pick the scores "
            "with `output=`: an int index (tuple outputs), a str key or attribute (dicts, dataclasses), or a "
            "callable mapping the raw output to scores."
        )
    return scores


__all__ += ["select_output"]
