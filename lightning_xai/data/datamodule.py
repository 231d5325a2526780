"""A ``LightningDataModule`` over :class:`~lightning_xai.data.shapes.ShapesDataset`.

This is the one module of :mod:`lightning_xai.data` that imports Lightning; the package exports
:class:`ShapesDataModule` lazily so ``ShapesDataset`` and ``select_probe`` stay Lightning-free.
The body is a mixin, :class:`ShapesDataModuleMixin`, so the same data module exists for both
Lightning packages: :class:`ShapesDataModule` here (``pytorch_lightning``) and
``lightning_xai.unified.ShapesDataModule`` (the unified ``lightning`` package).
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from lightning_xai._validation import check_float, check_int
from lightning_xai.data.shapes import SHAPE_NAMES, ShapesDataset

__all__ = ["ShapesDataModule", "ShapesDataModuleMixin"]


class ShapesDataModuleMixin:
    """Train/val/test splits of :class:`ShapesDataset`, with the shortcut in training only.

    The train split carries the label-correlated marker when ``shortcut=True``; the validation
    and test splits never do, so a model that learnt the marker instead of the shape is exposed
    by its validation accuracy and by its explanations. The three splits use different seeds
    (``seed``, ``seed + 1``, ``seed + 2``). ``train_dataloader`` shuffles with a generator
    seeded by ``seed``, so a run is reproducible.

    Args:
        batch_size: Batch size of every loader.
        num_train: Number of training images.
        num_val: Number of validation images (and of test images).
        image_size: Side of the square images.
        num_classes: Number of shape kinds, 2 to 6.
        shortcut: Add the spurious marker to the training split.
        num_workers: ``DataLoader`` workers.
        seed: Seed of the data and of the training shuffle.
        shortcut_strength: Fraction of training images with the marker.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: An argument is out of range.

    Examples:
        >>> from lightning_xai.data import ShapesDataModule
        >>> dm = ShapesDataModule(batch_size=16, num_train=64, num_val=32, shortcut=True)
        >>> dm.setup("fit")
        >>> images, labels, masks = next(iter(dm.train_dataloader()))
        >>> images.shape, labels.shape, masks.shape
        (torch.Size([16, 3, 32, 32]), torch.Size([16]), torch.Size([16, 1, 32, 32]))
    """

    def __init__(
        self,
        batch_size: int = 32,
        num_train: int = 1024,
        num_val: int = 256,
        image_size: int = 32,
        num_classes: int = 4,
        shortcut: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        shortcut_strength: float = 1.0,
    ) -> None:
        super().__init__()
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.num_train = check_int("num_train", num_train, 1)
        self.num_val = check_int("num_val", num_val, 1)
        self.image_size = check_int("image_size", image_size, 16)
        self.num_classes = check_int("num_classes", num_classes, 2, len(SHAPE_NAMES))
        if not isinstance(shortcut, bool):
            raise TypeError(f"Expected argument `shortcut` to be a bool, but got {shortcut!r}.")
        self.shortcut = shortcut
        self.num_workers = check_int("num_workers", num_workers, 0)
        self.seed = check_int("seed", seed, 0)
        self.shortcut_strength = check_float("shortcut_strength", shortcut_strength, 0.0, 1.0)
        self.save_hyperparameters()  # type: ignore[attr-defined]
        self.train_set: ShapesDataset | None = None
        self.val_set: ShapesDataset | None = None
        self.test_set: ShapesDataset | None = None

    @property
    def classes(self) -> list[str]:
        """The class names, index = label."""
        return list(SHAPE_NAMES[: self.num_classes])

    def _make(self, num_samples: int, shortcut: bool, seed: int) -> ShapesDataset:
        return ShapesDataset(
            num_samples=num_samples,
            image_size=self.image_size,
            num_classes=self.num_classes,
            shortcut=shortcut,
            shortcut_strength=self.shortcut_strength,
            seed=seed,
        )

    def setup(self, stage: str | None = None) -> None:
        """Generate the splits the ``stage`` needs (all of them for ``None``); idempotent."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = self._make(self.num_train, self.shortcut, self.seed)
        if stage in (None, "fit", "validate", "predict") and self.val_set is None:
            self.val_set = self._make(self.num_val, False, self.seed + 1)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._make(self.num_val, False, self.seed + 2)

    def _loader(self, dataset: ShapesDataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled (seeded) loader over the training split, shortcut included."""
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Loader over the validation split (never has the shortcut), in order."""
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Loader over the test split (never has the shortcut), in order."""
        if self.test_set is None:
            self.setup("test")
        assert self.test_set is not None
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        """The validation loader."""
        return self.val_dataloader()


class ShapesDataModule(ShapesDataModuleMixin, pl.LightningDataModule):
    __doc__ = ShapesDataModuleMixin.__doc__
