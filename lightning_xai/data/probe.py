"""Probe sets: the fixed, class-balanced handful of inputs a monitor explains every time.

A callback picks its probe once (at ``setup``) with :func:`select_probe` and keeps it in its
``state_dict`` (:meth:`Probe.state_dict` / :meth:`Probe.from_state_dict`), so the explanations
of one run, and of a resumed run, are always about the same images.

Batch formats understood by :func:`select_probe` (for a ``DataLoader``, each batch; for a
``Dataset``, each item):

* a tensor: inputs only;
* a tuple or list ``(x,)``, ``(x, y)`` or ``(x, y, mask, ...)`` (elements after the third are
  ignored);
* a mapping with an input key from :data:`INPUT_KEYS`, and optionally a target key from
  :data:`TARGET_KEYS` and a mask key from :data:`MASK_KEYS` (first match wins).

Targets are class indices ``[B]`` (a ``[B, K]`` one-hot or score tensor is reduced by argmax).
Masks are ``[B, H, W]`` or ``[B, 1, H, W]``; boolean and integer masks become ``{0, 1}`` floats
(nonzero = foreground).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data._utils.collate import default_collate

__all__ = [
    "INPUT_KEYS",
    "TARGET_KEYS",
    "MASK_KEYS",
    "Probe",
    "ProbeSource",
    "as_targets",
    "select_probe",
    "split_batch",
]

INPUT_KEYS: tuple[str, ...] = ("image", "images", "input", "inputs", "x", "pixel_values", "img")
"""Mapping keys read as the inputs, in order of preference."""
TARGET_KEYS: tuple[str, ...] = ("label", "labels", "target", "targets", "y", "class", "class_idx")
"""Mapping keys read as the class targets, in order of preference."""
MASK_KEYS: tuple[str, ...] = ("mask", "masks", "segmentation", "seg", "gt_mask")
"""Mapping keys read as the ground-truth masks, in order of preference."""

ProbeSource = Union[DataLoader, Dataset, Tensor, Sequence[Tensor], Iterable[Any]]
"""What :func:`select_probe` reads from: a ``DataLoader`` (or any iterable of batches), a map-style
or iterable ``Dataset``, a tensor of inputs, or a tuple of tensors ``(x[, y[, mask]])``."""

_MIN_SCAN = 64
"""Without ``num_classes``, read at least ``max(_MIN_SCAN, _SCAN_FACTOR * num_samples)`` samples
before stopping, so that rarely-seen classes still get a chance to appear."""
_SCAN_FACTOR = 8


@dataclass(eq=False)
class Probe:
    """A fixed set of inputs to explain, with their targets and ground-truth masks when known.

    Attributes:
        inputs: ``[N, ...]`` inputs.
        targets: ``[N]`` int64 class indices, or ``None``.
        masks: ``[N, 1, H, W]`` float masks, or ``None``.

    Raises:
        TypeError: A field is not a tensor (or ``None``).
        ValueError: The fields disagree on ``N`` or ``masks`` is not ``[N, 1, H, W]``.

    Examples:
        >>> probe = Probe(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> restored = Probe.from_state_dict(probe.state_dict())
        >>> len(restored), torch.equal(restored.inputs, probe.inputs)
        (4, True)
    """

    inputs: Tensor
    targets: Tensor | None = None
    masks: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor):
            raise TypeError(f"Expected `inputs` to be a tensor, but got {type(self.inputs).__name__}.")
        if self.inputs.ndim < 1:
            raise ValueError(f"Expected `inputs` with a batch dimension, but got shape {tuple(self.inputs.shape)}.")
        n = self.inputs.shape[0]
        if self.targets is not None:
            if not isinstance(self.targets, Tensor):
                raise TypeError(f"Expected `targets` to be a tensor or None, but got {type(self.targets).__name__}.")
            if self.targets.shape != (n,):
                raise ValueError(
                    f"Expected `targets` of shape [{n}] to match the inputs, but got {tuple(self.targets.shape)}."
                )
        if self.masks is not None:
            if not isinstance(self.masks, Tensor):
                raise TypeError(f"Expected `masks` to be a tensor or None, but got {type(self.masks).__name__}.")
            if self.masks.ndim != 4 or self.masks.shape[0] != n or self.masks.shape[1] != 1:
                raise ValueError(f"Expected `masks` of shape [{n}, 1, H, W], but got {tuple(self.masks.shape)}.")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def _map(self, fn: Callable[[Tensor], Tensor]) -> Probe:
        return Probe(
            inputs=fn(self.inputs),
            targets=None if self.targets is None else fn(self.targets),
            masks=None if self.masks is None else fn(self.masks),
        )

    def to(self, device: torch.device | str) -> Probe:
        """A copy of the probe with every tensor on ``device``."""
        return self._map(lambda t: t.to(device))

    def __getitem__(self, index: slice | Tensor | Sequence[int]) -> Probe:
        """The sub-probe at ``index`` (a slice, or a tensor/list of sample indices)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        if not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long, device=self.inputs.device)
        return self._map(lambda t: t[index] if isinstance(index, slice) else t[index.to(t.device)])

    def state_dict(self) -> dict[str, Tensor | None]:
        """The probe as a plain dict of CPU tensors (``None`` for missing fields), for checkpoints."""
        return {
            "inputs": self.inputs.detach().cpu(),
            "targets": None if self.targets is None else self.targets.detach().cpu(),
            "masks": None if self.masks is None else self.masks.detach().cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor | None]) -> Probe:
        """Rebuild a probe from :meth:`state_dict`'s output.

        Raises:
            ValueError: ``state`` has no ``"inputs"``.
        """
        if "inputs" not in state or state["inputs"] is None:
            raise ValueError(f"Expected a probe state with an 'inputs' tensor, but got keys {sorted(state)}.")
        return cls(inputs=state["inputs"], targets=state.get("targets"), masks=state.get("masks"))


# --------------------------------------------------------------------------------------------
# batch parsing
# --------------------------------------------------------------------------------------------
def _first_key(batch: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for key in keys:
        if key in batch:
            return key
    return None


def split_batch(batch: Any) -> tuple[Tensor, Any, Any]:
    """``(x, y or None, mask or None)`` from one batch in any supported format."""
    if isinstance(batch, Tensor):
        return batch, None, None
    if isinstance(batch, Mapping):
        x_key = _first_key(batch, INPUT_KEYS)
        if x_key is None:
            raise ValueError(
                f"Cannot find the inputs in a batch with keys {sorted(map(str, batch))}. Expected one of "
                f"{list(INPUT_KEYS)} for inputs (optionally {list(TARGET_KEYS)} for targets and "
                f"{list(MASK_KEYS)} for masks)."
            )
        y_key = _first_key(batch, TARGET_KEYS)
        m_key = _first_key(batch, MASK_KEYS)
        return batch[x_key], None if y_key is None else batch[y_key], None if m_key is None else batch[m_key]
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError("Expected a non-empty batch, but got an empty tuple/list.")
        x = batch[0]
        y = batch[1] if len(batch) > 1 else None
        mask = batch[2] if len(batch) > 2 else None
        return x, y, mask
    raise TypeError(
        f"Expected a batch to be a tensor, a tuple/list (x, y[, mask]) or a dict, but got {type(batch).__name__}."
    )


def as_targets(y: Any, batch_size: int) -> Tensor:
    y = torch.as_tensor(y).detach()
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[0] == batch_size:
        y = y.argmax(dim=1)
    if y.ndim == 0 and batch_size == 1:
        y = y.reshape(1)
    if y.shape != (batch_size,):
        raise ValueError(
            f"Expected the targets (second element or a {list(TARGET_KEYS)} key) to be [{batch_size}] class "
            f"indices, but got shape {tuple(y.shape)}."
        )
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ValueError(f"Expected integer class indices as targets, but got non-integral values {y.tolist()[:8]}.")
    return y.to(torch.long).cpu()


def _as_masks(mask: Any, batch_size: int) -> Tensor:
    mask = torch.as_tensor(mask).detach()
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4 or mask.shape[0] != batch_size or mask.shape[1] != 1:
        raise ValueError(
            f"Expected the masks (third element or a {list(MASK_KEYS)} key) to be [{batch_size}, H, W] or "
            f"[{batch_size}, 1, H, W], but got shape {tuple(mask.shape)}."
        )
    if not mask.is_floating_point():
        mask = mask != 0
    return mask.to(torch.float32).cpu()


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------
class _Collector:
    """Keeps rows per class in arrival order and knows when it has enough."""

    def __init__(self, num_samples: int, num_classes: int | None) -> None:
        self.num_samples = num_samples
        self.num_classes = num_classes
        self.scan = max(_MIN_SCAN, _SCAN_FACTOR * num_samples)
        self.read = 0
        self.has_targets: bool | None = None
        self.has_masks: bool | None = None
        self.rows: dict[int, list[tuple[Tensor, Tensor | None, Tensor | None]]] = {}

    def _quota(self, classes: Sequence[int]) -> dict[int, int]:
        k = len(classes)
        return {c: self.num_samples // k + (1 if i < self.num_samples % k else 0) for i, c in enumerate(classes)}

    def add(self, batch: Any) -> None:
        x, y, mask = split_batch(batch)
        if not isinstance(x, Tensor):
            raise TypeError(f"Expected the inputs to be a tensor, but got {type(x).__name__}.")
        if x.ndim < 1:
            raise ValueError(f"Expected batched inputs, but got shape {tuple(x.shape)}.")
        b = int(x.shape[0])
        targets = None if y is None else as_targets(y, b)
        masks = None if mask is None else _as_masks(mask, b)
        if self.has_targets is None:
            self.has_targets, self.has_masks = targets is not None, masks is not None
        elif self.has_targets != (targets is not None) or self.has_masks != (masks is not None):
            raise ValueError("Expected every batch to have the same fields (targets, masks), but they differ.")
        x = x.detach().cpu()
        for i in range(b):
            if targets is None:
                key = 0
            else:
                key = int(targets[i])
                if self.num_classes is not None and not 0 <= key < self.num_classes:
                    raise ValueError(f"Expected targets in [0, {self.num_classes}), but got class index {key}.")
            row = (x[i], None if targets is None else targets[i], None if masks is None else masks[i])
            self.rows.setdefault(key, []).append(row)
        self.read += b

    def done(self) -> bool:
        if self.read == 0:
            return False
        if not self.has_targets:
            return self.read >= self.num_samples
        if self.num_classes is not None:
            quota = self._quota(range(self.num_classes))
            return all(len(self.rows.get(c, ())) >= q for c, q in quota.items())
        if self.read < self.scan:
            return False
        quota = self._quota(sorted(self.rows))
        return sum(min(len(self.rows[c]), q) for c, q in quota.items()) >= self.num_samples

    def result(self) -> Probe:
        if self.read == 0:
            raise ValueError("Cannot select a probe: the source yielded no samples.")
        classes = sorted(self.rows)
        chosen: list[tuple[Tensor, Tensor | None, Tensor | None]] = []
        depth = 0
        while len(chosen) < self.num_samples:
            added = False
            for c in classes:
                if depth < len(self.rows[c]) and len(chosen) < self.num_samples:
                    chosen.append(self.rows[c][depth])
                    added = True
            if not added:
                break
            depth += 1
        inputs = torch.stack([r[0] for r in chosen]).clone()
        targets = torch.stack([r[1] for r in chosen]).clone() if self.has_targets else None  # type: ignore[misc]
        masks = torch.stack([r[2] for r in chosen]).clone() if self.has_masks else None  # type: ignore[misc]
        return Probe(inputs=inputs, targets=targets, masks=masks)


def _is_tensor_tuple(source: Any) -> bool:
    return (
        isinstance(source, tuple)
        and 0 < len(source) <= 3
        and isinstance(source[0], Tensor)
        and all(t is None or isinstance(t, Tensor) for t in source)
        and all(t is None or (t.ndim >= 1 and t.shape[0] == source[0].shape[0]) for t in source)
    )


def _map_dataset_items(dataset: Dataset, seed: int) -> Iterator[Any]:
    n = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    for index in order.tolist():
        yield default_collate([dataset[index]])


def _iterable_items(dataset: Iterable[Any]) -> Iterator[Any]:
    for item in dataset:
        yield default_collate([item])


def select_probe(
    source: ProbeSource,
    num_samples: int = 8,
    num_classes: int | None = None,
    seed: int = 0,
) -> Probe:
    """Pick a fixed, class-balanced probe set from a loader, a dataset or tensors.

    Samples are bucketed by class and taken round-robin over the sorted classes (class 0, 1, 2,
    ..., then each class's second sample, ...), so ``num_samples=8`` over 4 classes gives two of
    each. Reading stops as soon as the buckets can fill the probe: with ``num_classes`` once
    every class ``0..num_classes-1`` has its share; without it, once at least
    ``max(64, 8 * num_samples)`` samples were read (so rare classes can appear) and the classes
    seen can fill it. A huge loader is never read to the end needlessly. If the source runs out
    first, the probe is as balanced as the data allows (possibly smaller than ``num_samples``).
    Without targets the first ``num_samples`` samples are taken.

    Determinism: a map-style ``Dataset`` or a tuple of tensors is visited in a random order drawn
    from ``seed``; a ``DataLoader`` is read in its own order, with torch's global CPU generator
    temporarily seeded with ``seed`` (so a shuffled loader without its own generator gives the
    same probe every time) and restored afterwards. The batch formats are described in the
    module docs (tuples ``(x, y[, mask])``, dicts with :data:`INPUT_KEYS`, :data:`TARGET_KEYS`,
    :data:`MASK_KEYS`).

    Args:
        source: A ``DataLoader`` (or any iterable of batches), a ``Dataset`` (map-style or
            iterable), a tensor of inputs, or a tuple of tensors ``(x[, y[, mask]])``.
        num_samples: How many samples to pick.
        num_classes: Number of classes, when known: makes the stopping rule exact and rejects
            targets outside ``[0, num_classes)``.
        seed: Seed of the visiting order.

    Returns:
        A :class:`Probe` on the CPU (inputs detached and cloned).

    Raises:
        TypeError: ``source`` or a batch has an unsupported type.
        ValueError: Bad ``num_samples``/``num_classes``, a dict batch without a known inputs
            key (the message lists the keys found), malformed targets or masks, an empty source.

    Examples:
        >>> x, y = torch.rand(100, 3, 8, 8), torch.arange(100) % 4
        >>> probe = select_probe((x, y), num_samples=8, num_classes=4)
        >>> probe.targets.tolist()
        [0, 1, 2, 3, 0, 1, 2, 3]
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"Expected argument `num_samples` to be a positive int, but got {num_samples!r}.")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"Expected argument `num_classes` to be a positive int or None, but got {num_classes!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Expected argument `seed` to be an int, but got {seed!r}.")

    collector = _Collector(num_samples, num_classes)
    if isinstance(source, Tensor):
        source = (source,)

    if _is_tensor_tuple(source):
        tensors: list[Tensor | None] = list(source)  # type: ignore[arg-type]
        n = int(source[0].shape[0])  # type: ignore[index]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        chunk = max(_MIN_SCAN, _SCAN_FACTOR * num_samples)
        for start in range(0, n, chunk):
            idx = order[start : start + chunk]
            collector.add(tuple(t if t is None else t[idx.to(t.device)] for t in tensors))
            if collector.done():
                break
        return collector.result()

    if isinstance(source, DataLoader) or (
        isinstance(source, Iterable) and not isinstance(source, (Dataset, str, bytes, Mapping))
    ):
        batches: Iterable[Any] = source
    elif isinstance(source, IterableDataset):
        batches = _iterable_items(source)
    elif isinstance(source, Dataset) and hasattr(source, "__len__"):
        batches = _map_dataset_items(source, seed)
    elif isinstance(source, Dataset):
        raise TypeError(f"Expected a map-style Dataset with __len__, but got {type(source).__name__} without it.")
    else:
        raise TypeError(
            "Expected `source` to be a DataLoader, a Dataset, a tensor or a tuple of tensors (x[, y[, mask]]), "
            f"but got {type(source).__name__}."
        )

    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        iterator = iter(batches)
        try:
            for batch in iterator:
                collector.add(batch)
                if collector.done():
                    break
        finally:
            del iterator
    return collector.result()
