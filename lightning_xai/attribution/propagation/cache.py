"""A scoped cache of rule-modified layer parameters (BatchNorm-merged weights, their signed
parts), never served stale, alive only inside :func:`weight_cache`.

Every rule that needs modified weights (z+ needs ``W+``, a merged BatchNorm needs ``s * W`` and
``s * (b - mean) + beta``, gamma ``W + gamma W+``, ...) would otherwise recompute them each time
they are asked for: on resnet18 at 64 x 64 that is a pass over 11 M weights per call, a sizeable
share of the explanation. Inside a ``with weight_cache():`` block each derived tensor is kept with
the *signature* of the tensors it was computed from: the tensor object itself (by weak
reference), its version counter (``Tensor._version``, bumped by every in-place write: an optimizer
step, ``copy_``, ``load_state_dict``, a BatchNorm's running-statistics update in training), its
storage address, dtype, device and shape. A lookup recomputes whenever any of them changed, so a
model that trained, moved or was reloaded in between is never served stale weights. Writes
through ``.data`` (``p.data.add_(...)``) bypass the version counter: after such a write call
:func:`clear_cache` (or construct the explainer with ``cache_weights=False``).

Scope: every LRP / Deep Taylor call enters a scope of its own, so nothing outlives a call (during
training the weights change every step, and a cache kept between steps would only hold copies in
device memory). To reuse the derived weights across calls on unchanged weights (a monitor
explaining several batches or targets in one run, a benchmark), enter one scope around them;
scopes nest (inner ones share the outermost), belong to the thread that entered them, and the
outermost one drops every entry on exit. Entries cost the memory of the derived tensors: about
one copy of the weights per rule kind (z+ on a ResNet: one).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["cache_size", "cached", "clear_cache", "weight_cache"]

_Store = weakref.WeakKeyDictionary[nn.Module, dict[Any, tuple[list[Any], Any]]]


class _Scope(threading.local):
    store: _Store | None = None  # the outermost open scope's entries in this thread


_SCOPE = _Scope()


@contextlib.contextmanager
def weight_cache() -> Iterator[None]:
    """Keep rule-modified weights for reuse until the block exits (see the module docstring).

    Nested blocks share the outermost one's entries; the outermost drops them all on exit, on
    every exit path.

    Examples:
        >>> layer = nn.Linear(3, 2)
        >>> plus = lambda: cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        >>> with weight_cache():
        ...     plus() is plus(), cache_size()
        (True, 1)
        >>> cache_size()
        0
    """
    if _SCOPE.store is not None:
        yield
        return
    _SCOPE.store = weakref.WeakKeyDictionary()
    try:
        yield
    finally:
        _SCOPE.store.clear()
        _SCOPE.store = None


def cache_size() -> int:
    """Number of derived values the open scope holds (0 outside :func:`weight_cache`)."""
    store = _SCOPE.store
    return 0 if store is None else sum(len(entries) for entries in store.values())


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
    """``compute()``, from the open :func:`weight_cache` scope when ``sources`` are unchanged since
    it was stored for ``(owner, key)``; computed under ``no_grad``. Outside a scope: computed, not kept.

    Args:
        owner: The module the derived values belong to (held by weak reference).
        key: What is derived (hashable; include every non-tensor input, e.g. a rule's parameter).
        sources: Every tensor the result is computed from.
        compute: Computes the result.
        enabled: ``False``: compute, neither read nor write the cache.

    Examples:
        >>> layer = nn.Linear(3, 2)
        >>> with weight_cache():
        ...     plus = cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        ...     hit = plus is cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        ...     with torch.no_grad():
        ...         _ = layer.weight.add_(1.0)  # an in-place write bumps the version: recomputed
        ...     stale = plus is cached(layer, "w+", [layer.weight], lambda: layer.weight.clamp(min=0))
        >>> hit, stale
        (True, False)
    """
    scope = _SCOPE.store
    if not enabled or scope is None:
        with torch.no_grad():
            return compute()
    store = scope.get(owner)
    if store is not None:
        hit = store.get(key)
        if hit is not None and _same(hit[0], sources):
            return hit[1]
    with torch.no_grad():
        value = compute()
    sig = _signature(sources)
    if sig is not None:
        if store is None:
            store = scope.setdefault(owner, {})
        store[key] = (sig, value)
    return value


def clear_cache() -> None:
    """Drop every derived parameter the open scope holds (after writes through ``.data``, which
    the version counters do not see); the scope stays open. Nothing to do outside a scope.

    Examples:
        >>> clear_cache()
    """
    if _SCOPE.store is not None:
        _SCOPE.store.clear()
