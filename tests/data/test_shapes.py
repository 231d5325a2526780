import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch

from lightning_xai.data import MARKER_COLORS, SHAPE_NAMES, ShapesDataModule, ShapesDataset


@pytest.fixture(scope="module")
def clean() -> ShapesDataset:
    """No noise, so pixel colours are exact."""
    return ShapesDataset(num_samples=96, num_classes=6, noise=0.0, seed=3)


@pytest.fixture(scope="module")
def hans() -> ShapesDataset:
    return ShapesDataset(num_samples=96, num_classes=6, noise=0.0, seed=3, shortcut=True)


def test_deterministic_for_a_seed():
    a, b = ShapesDataset(64, seed=7), ShapesDataset(64, seed=7)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    c = ShapesDataset(64, seed=8)
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("image_size", [16, 32, 48])
@pytest.mark.parametrize("num_classes", [2, 4, 6])
def test_shapes_dtypes_ranges(image_size, num_classes):
    ds = ShapesDataset(num_samples=30, image_size=image_size, num_classes=num_classes, shortcut=True)
    s = image_size
    assert len(ds) == 30
    assert ds.classes == list(SHAPE_NAMES[:num_classes])
    assert ds.images.shape == (30, 3, s, s) and ds.images.dtype == torch.float32
    assert ds.images.min() >= 0 and ds.images.max() <= 1 and torch.isfinite(ds.images).all()
    assert ds.labels.shape == (30,) and ds.labels.dtype == torch.int64
    assert set(ds.labels.tolist()) == set(range(num_classes))
    counts = torch.bincount(ds.labels, minlength=num_classes)
    assert counts.max() - counts.min() <= 1  # balanced
    assert ds.masks.shape == (30, 1, s, s) and ds.masks.dtype == torch.float32
    assert set(ds.masks.unique().tolist()) <= {0.0, 1.0}
    assert (ds.masks.sum(dim=(1, 2, 3)) > 0).all()
    # the shape stays inside the image and clear of the marker corners
    assert (ds.masks * ds.marker_masks).sum() == 0
    image, label, mask = ds[5]
    assert image.shape == (3, s, s) and label.ndim == 0 and mask.shape == (1, s, s)


def test_mask_covers_the_shape(clean):
    for i in range(len(clean)):
        inside = clean.masks[i, 0].bool()
        pixels = clean.images[i][:, inside]  # [3, area]
        colour = pixels[:, :1]
        # one flat colour inside the mask (noise=0) ...
        assert torch.allclose(pixels, colour.expand_as(pixels))
        # ... that the background around it mostly is not
        outside = clean.images[i][:, ~inside]
        assert (outside - colour).abs().amax(dim=0).mean() > 0.2


def test_shape_kinds_have_their_geometry(clean):
    area = clean.masks.sum(dim=(1, 2, 3))
    rows = clean.masks[:, 0].amax(dim=2).sum(dim=1)
    cols = clean.masks[:, 0].amax(dim=1).sum(dim=1)
    fill = area / (rows * cols)
    for k, name in enumerate(clean.classes):
        f = fill[clean.labels == k]
        if name == "square":
            assert (f > 0.99).all()
        elif name in ("triangle", "diamond"):
            assert (f < 0.75).all()
        elif name == "circle":
            assert ((f > 0.6) & (f < 0.95)).all()


def test_shortcut_marker_is_label_correlated(clean, hans):
    assert hans.has_marker.all() and not clean.has_marker.any()
    assert clean.marker_masks.sum() == 0
    s, m = hans.image_size, hans.marker_size
    assert (hans.marker_masks.sum(dim=(1, 2, 3)) == m * m).all()
    assert (hans.marker_masks * hans.masks).sum() == 0  # the marker is not part of the mask
    rows = torch.arange(s, dtype=torch.float32)
    for i in range(len(hans)):
        marker = hans.marker_masks[i, 0]
        label = int(hans.labels[i])
        cy = (marker.sum(dim=1) * rows).sum() / marker.sum()
        cx = (marker.sum(dim=0) * rows).sum() / marker.sum()
        corner = int(cy > s / 2) * 2 + int(cx > s / 2)
        assert corner == label % 4
        colour = hans.images[i][:, marker.bool()]
        assert torch.allclose(colour, torch.tensor(MARKER_COLORS[label]).view(3, 1).expand_as(colour))
    # the same seed with and without the shortcut differs exactly at the marker pixels
    differs = (hans.images != clean.images).any(dim=1, keepdim=True).float()
    assert torch.equal(differs, hans.marker_masks)


def test_shortcut_strength_is_a_fraction():
    ds = ShapesDataset(400, shortcut=True, shortcut_strength=0.5)
    assert 0.4 < ds.has_marker.float().mean() < 0.6
    assert torch.equal(ds.marker_masks.sum(dim=(1, 2, 3)) > 0, ds.has_marker)
    assert not ShapesDataset(50, shortcut=True, shortcut_strength=0.0).has_marker.any()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_classes": 7}, ValueError, "num_classes"),
        ({"num_classes": 1}, ValueError, "num_classes"),
        ({"image_size": 8}, ValueError, "image_size.*8"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"shortcut_strength": 1.5}, ValueError, "shortcut_strength.*1.5"),
        ({"noise": -0.1}, ValueError, "noise"),
        ({"image_size": 32.0}, TypeError, "image_size"),
        ({"shortcut": "yes"}, TypeError, "shortcut"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        ShapesDataset(**kwargs)


def test_datamodule_shortcut_in_train_only():
    dm = ShapesDataModule(batch_size=16, num_train=64, num_val=32, shortcut=True, seed=1)
    dm.setup("fit")
    assert dm.train_set is not None and dm.val_set is not None
    assert dm.train_set.has_marker.all() and not dm.val_set.has_marker.any()
    assert dm.classes == dm.train_set.classes
    images, labels, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (16, 3, 32, 32) and labels.shape == (16,) and masks.shape == (16, 1, 32, 32)
    # the shuffle is seeded: two loaders give the same order, different from the dataset order
    a = torch.cat([y for _, y, _ in dm.train_dataloader()])
    b = torch.cat([y for _, y, _ in dm.train_dataloader()])
    assert torch.equal(a, b) and not torch.equal(a, dm.train_set.labels)
    val_labels = torch.cat([y for _, y, _ in dm.val_dataloader()])
    assert torch.equal(val_labels, dm.val_set.labels)
    test = dm.test_dataloader().dataset
    assert not test.has_marker.any() and not torch.equal(test.images, dm.val_set.images)
    train_set = dm.train_set
    dm.setup("fit")
    assert dm.train_set is train_set  # idempotent
    assert dm.hparams["shortcut"] is True


class _TinyClassifier(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4)
        )

    def training_step(self, batch, batch_idx):
        images, labels, _ = batch
        return torch.nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch, batch_idx):
        images, labels, _ = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.net(images), labels))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_datamodule_in_a_trainer():
    dm = ShapesDataModule(batch_size=8, num_train=32, num_val=16, shortcut=True)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_TinyClassifier(), datamodule=dm)
    assert trainer.global_step == 4 and "val_loss" in trainer.callback_metrics


def test_datamodule_bad_argument():
    with pytest.raises(ValueError, match="batch_size"):
        ShapesDataModule(batch_size=0)


def test_dataset_and_probe_do_not_import_lightning():
    code = (
        "import sys; import lightning_xai.data, lightning_xai.render; "
        "from lightning_xai.data import ShapesDataset, select_probe; "
        "from lightning_xai.render import overlay; "
        "assert 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
