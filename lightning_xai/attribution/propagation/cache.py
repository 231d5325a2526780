"""A cache of rule-modified layer parameters (BatchNorm-merged weights, their signed parts), kept
across explainer calls and never served stale.

Every rule that needs modified weights (z+ needs ``W+``, a merged BatchNorm needs ``s * W`` and
``s * (b - mean) + beta``, gamma ``W + gamma W+``, ...) would otherwise recompute them on every
call: on resnet18 at 64 x 64 that is a pass over 11 M weights per call, a sizeable share of the
explanation. The cache keeps each derived tensor with the *signature* of the tensors it was
computed from: the tensor object itself (by weak reference), its version counter
(``Tensor._version``, bumped by every in-place write: an optimizer step, ``copy_``,
``load_state_dict``, a BatchNorm's running-statistics update in training), its storage address,
dtype, device and shape. A lookup recomputes whenever any of them changed, so a model that
trained, moved or was reloaded in between is never served stale weights. Writes through
``.data`` (``p.data.add_(...)``) bypass the version counter: after such a write call
:func:`clear_cache` (or construct the explainer with ``cache_weights=False``).

Entries are held per module by weak reference (nothing is attached to the model; a deleted model
frees them) and cost the memory of the derived tensors: about one copy of the weights per rule
kind (z+ on a ResNet: one).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["cached", "clear_cache"]

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[list[Any], Any]]] = weakref.WeakKeyDictionary()


def _signature(tensors: Sequence[Tensor | None]) -> list[Any] | None:
    """What identifies the current values of ``tensors``; ``None`` when it cannot be told (an
    inference tensor has no version counter)."""
    sig: list[Any] = []
    for t in tensors:
        if t is None:
            sig.append(None)
            continue
        if t.is_inference():
            return None
        sig.append((weakref.ref(t), t._version, t.data_ptr(), t.dtype, t.device, t.shape))
    return sig


def _same(sig: list[Any], tensors: Sequence[Tensor | None]) -> bool:
    for entry, t in zip(sig, tensors):
        if entry is None or t is None:
            if entry is not t:
                return False
            continue
        ref, version, ptr, dtype, device, shape = entry
        if ref() is not t or t._version != version or t.data_ptr() != ptr:
            return False
        if t.dtype != dtype or t.device != device or t.shape != shape:
            return False
    return True


def cached(
    owner: nn.Module, key: Any, sources: Sequence[Tensor | None], compute: Callable[[], Any], enabled: bool = True
) -> Any:
    """``compute()``, from the cache when ``sources`` are unchanged since it was stored for
    ``(owner, key)``; computed under ``no_grad``.

    Args:
        owner: The module the derived values belong to (held by weak reference).
        key: What is derived (hashable; include every non-tensor input, e.g. a rule's parameter).
        sources: Every tensor the result is computed from.
        compute: Computes the result.
        enabled: ``False``: compute, neither read nor write the cache.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> plus = cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        >>> plus is cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        True
        >>> with torch.no_grad():
        ...     _ = layer.weight.add_(1.0)  # an in-place write bumps the version: recomputed
        >>> plus is cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        False
    """
    if not enabled:
        with torch.no_grad():
            return compute()
    store = _CACHE.get(owner)
    if store is not None:
        hit = store.get(key)
        if hit is not None and _same(hit[0], sources):
            return hit[1]
    with torch.no_grad():
        value = compute()
    sig = _signature(sources)
    if sig is not None:
        if store is None:
            store = _CACHE.setdefault(owner, {})
        store[key] = (sig, value)
    return value


def clear_cache() -> None:
    """Drop every cached derived parameter (after writes through ``.data`` the version counters
    do not see).

    Example:
        >>> clear_cache()
    """
    _CACHE.clear()
