"""Concept and random example sets: tensors, ``Dataset``s, ``DataLoader``s or an image folder.

Every concept method takes its example sets as an :data:`ExampleSource` and turns them into one
``[N, ...]`` tensor with :func:`load_examples`:

* a tensor ``[N, ...]``: used as is;
* a map-style ``Dataset``: every item, or its first element (a tuple ``(x, y, ...)``), or its input
  key (a mapping, see :data:`~lightning_xai.data.INPUT_KEYS`);
* a ``DataLoader`` or any other iterable of batches, read the same way;
* a folder path (``str`` or ``os.PathLike``): every ``.png``/``.jpg``/``.jpeg``/``.bmp``/``.gif``/
  ``.webp`` file in it, in sorted order, as ``[3, H, W]`` (``mode="RGB"``, the default) or
  ``[1, H, W]`` (``mode="L"``, grayscale) floats in ``[0, 1]`` (``image_size`` resizes them;
  otherwise they must all have one size).

:func:`sample_examples` draws ``k`` random sets from one pool of examples (a tensor or a
``Dataset``: only the chosen items are read), which is how :class:`~lightning_xai.concepts.TCAV`
builds its random sets when given one pool instead of a list of sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_xai._validation import check_int
from lightning_xai.data.probe import INPUT_KEYS

__all__ = ["ExampleSource", "IMAGE_EXTENSIONS", "load_examples", "sample_examples", "sample_indices", "example_count"]

ExampleSource = Union[Tensor, Dataset, DataLoader, Iterable[Any], str, "os.PathLike[str]"]
"""A set of examples: a ``[N, ...]`` tensor, a ``Dataset``, a ``DataLoader`` (or other iterable of
batches) or an image folder path."""

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
"""File suffixes read from an image folder (case-insensitive)."""


def _inputs_of(item: Any, what: str) -> Tensor:
    """The input tensor of one dataset item or batch."""
    if isinstance(item, Tensor):
        return item
    if isinstance(item, Mapping):
        for key in INPUT_KEYS:
            if key in item:
                return torch.as_tensor(item[key])
        raise ValueError(
            f"Cannot find the inputs of {what} with keys {sorted(map(str, item))}; expected one of {list(INPUT_KEYS)}."
        )
    if isinstance(item, (tuple, list)) and item:
        return torch.as_tensor(item[0])
    raise TypeError(f"Expected {what} to be a tensor, a tuple (x, ...) or a mapping, but got {type(item).__name__}.")


def _load_folder(path: Path, image_size: int | None, max_examples: int | None, mode: str = "RGB") -> Tensor:
    if not path.is_dir():
        raise ValueError(f"Expected an image folder, but {str(path)!r} is not a directory.")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ValueError(f"The folder {str(path)!r} holds no image file (looked for {', '.join(IMAGE_EXTENSIONS)}).")
    if max_examples is not None:
        files = files[:max_examples]
    import numpy as np
    from PIL import Image

    images = []
    for file in files:
        with Image.open(file) as img:
            img = img.convert(mode)
            if image_size is not None:
                img = img.resize((image_size, image_size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8).copy()
            images.append(torch.from_numpy(array.reshape(*array.shape[:2], -1)).permute(2, 0, 1))
    sizes = {tuple(t.shape) for t in images}
    if len(sizes) > 1:
        raise ValueError(
            f"The images in {str(path)!r} have different sizes {sorted(sizes)}; pass `image_size` to resize them."
        )
    return torch.stack(images).float().div_(255.0)


def load_examples(
    source: ExampleSource,
    *,
    name: str = "examples",
    max_examples: int | None = None,
    image_size: int | None = None,
    mode: str = "RGB",
) -> Tensor:
    """One example set as a ``[N, ...]`` float tensor (on the CPU unless ``source`` is a tensor).

    Args:
        source: A tensor, ``Dataset``, ``DataLoader``/iterable of batches, or an image folder path.
        name: What the set is called in error messages (a concept name).
        max_examples: Read at most this many examples (the first ones).
        image_size: For a folder: resize every image to ``image_size`` x ``image_size``.
        mode: For a folder: the PIL mode every image is converted to, ``"RGB"`` (3 channels) or
            ``"L"`` (1 channel, grayscale): match the model's input channels.

    Returns:
        The examples, ``[N, ...]``, floating point.

    Raises:
        TypeError: ``source`` has an unsupported type, or its items are not tensors.
        ValueError: ``source`` is empty, a folder holds no images, or the examples disagree in shape.

    Examples:
        >>> load_examples(torch.zeros(5, 3, 8, 8)).shape
        torch.Size([5, 3, 8, 8])
        >>> from torch.utils.data import TensorDataset
        >>> load_examples(TensorDataset(torch.zeros(4, 3, 8, 8), torch.zeros(4))).shape
        torch.Size([4, 3, 8, 8])
    """
    max_examples = check_int("max_examples", max_examples, 1, allow_none=True)
    if mode not in ("RGB", "L"):
        raise ValueError(f"Expected argument `mode` to be 'RGB' or 'L', but got {mode!r}.")
    if isinstance(source, (str, os.PathLike)):
        examples = _load_folder(
            Path(source), check_int("image_size", image_size, 1, allow_none=True), max_examples, mode
        )
    elif isinstance(source, Tensor):
        examples = source.detach()
        if max_examples is not None:
            examples = examples[:max_examples]
    elif isinstance(source, Dataset) and hasattr(source, "__len__") and hasattr(source, "__getitem__"):
        count = len(source)  # type: ignore[arg-type]
        if max_examples is not None:
            count = min(count, max_examples)
        items = [_inputs_of(source[i], f"item {i} of {name!r}") for i in range(count)]
        examples = _stack(items, name)
    elif isinstance(source, Iterable):
        items, seen = [], 0
        for i, batch in enumerate(source):
            x = _inputs_of(batch, f"batch {i} of {name!r}")
            items.append(x)
            seen += x.shape[0] if x.ndim else 0
            if max_examples is not None and seen >= max_examples:
                break
        if not items:
            raise ValueError(f"Expected a non-empty set of examples for {name!r}, but the iterable yielded nothing.")
        examples = _cat(items, name)
        if max_examples is not None:
            examples = examples[:max_examples]
    else:
        raise TypeError(
            f"Expected the examples of {name!r} to be a tensor, a Dataset, a DataLoader or an image folder path, "
            f"but got {type(source).__name__}."
        )
    if examples.ndim < 2 or examples.shape[0] == 0:
        raise ValueError(
            f"Expected a non-empty batch of examples [N, ...] for {name!r}, but got shape {tuple(examples.shape)}."
        )
    if not examples.is_floating_point():
        examples = examples.float()
    return examples


def _stack(items: list[Tensor], name: str) -> Tensor:
    if not items:
        raise ValueError(f"Expected a non-empty set of examples for {name!r}, but the dataset is empty.")
    shapes = {tuple(t.shape) for t in items}
    if len(shapes) > 1:
        raise ValueError(f"The examples of {name!r} have different shapes {sorted(shapes)}.")
    return torch.stack(items)


def _cat(items: list[Tensor], name: str) -> Tensor:
    shapes = {tuple(t.shape[1:]) for t in items}
    if len(shapes) > 1:
        raise ValueError(f"The examples of {name!r} have different shapes {sorted(shapes)}.")
    return torch.cat(items)


def example_count(source: ExampleSource) -> int | None:
    """The number of examples in ``source`` without reading them, where it is known."""
    if isinstance(source, Tensor):
        return int(source.shape[0])
    if isinstance(source, DataLoader):
        try:
            return len(source.dataset)  # type: ignore[arg-type]
        except TypeError:
            return None
    if isinstance(source, Dataset) and hasattr(source, "__len__"):
        return len(source)  # type: ignore[arg-type]
    return None


def sample_indices(pool: Tensor | Dataset, k: int, size: int, *, seed: int = 0, name: str = "random") -> list[Tensor]:
    """The indices :func:`sample_examples` reads: ``k`` seeded draws of ``size`` indices into ``pool``.

    Raises:
        TypeError: ``pool`` is not a tensor or a map-style ``Dataset``.
        ValueError: The pool holds fewer than ``size`` examples.
    """
    k = check_int("k", k, 1)
    size = check_int("size", size, 1)
    n = example_count(pool)  # type: ignore[arg-type]
    if n is None:
        raise TypeError(
            f"Expected the pool of {name!r} examples to be a tensor or a map-style Dataset, but got {type(pool).__name__}."
        )
    if n < size:
        raise ValueError(f"The pool of {name!r} examples holds {n} examples; {size} are needed per set.")
    gen = torch.Generator().manual_seed(seed)
    if n >= k * size:
        order = torch.randperm(n, generator=gen)
        return [order[i * size : (i + 1) * size] for i in range(k)]
    return [torch.randperm(n, generator=gen)[:size] for _ in range(k)]


def sample_examples(pool: Tensor | Dataset, k: int, size: int, *, seed: int = 0, name: str = "random") -> list[Tensor]:
    """``k`` random sets of ``size`` examples each, drawn from ``pool`` with a seeded generator.

    The sets are disjoint when the pool holds at least ``k * size`` examples; otherwise each set
    is drawn without replacement on its own. Only the chosen items of a ``Dataset`` are read.

    Args:
        pool: A ``[N, ...]`` tensor or a map-style ``Dataset``.
        k: Number of sets.
        size: Examples per set.
        seed: Seed of the draw.
        name: Name for error messages.

    Returns:
        ``k`` tensors of shape ``[size, ...]``.

    Raises:
        ValueError: The pool holds fewer than ``size`` examples.

    Examples:
        >>> sets = sample_examples(torch.arange(40.0).view(20, 2), k=3, size=5)
        >>> [tuple(s.shape) for s in sets]
        [(5, 2), (5, 2), (5, 2)]
    """
    picks = sample_indices(pool, k, size, seed=seed, name=name)
    if isinstance(pool, Tensor):
        return [pool[p.to(pool.device)].detach() for p in picks]
    return [_stack([_inputs_of(pool[int(i)], f"item {int(i)} of {name!r}") for i in p], name).float() for p in picks]
