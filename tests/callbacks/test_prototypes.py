"""PrototypePush, PrototypeStages and PrototypeMonitor on a tiny prototype network."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_xai.callbacks import PrototypeMonitor, PrototypePush, PrototypeStages
from lightning_xai.modules import patch_boxes
from tests.callbacks.helpers import read_tensorboard, tiny_datamodule, tiny_model, trainer_kwargs
from tests.callbacks.proto_helpers import BatchLog, LabelledImages, ProtoShapes, PushRecorder, StateSnapshots


def fit_proto(tmp_path: Path, callbacks: list, seed: int = 0, **overrides) -> tuple[ProtoShapes, pl.Trainer]:
    pl.seed_everything(seed, verbose=False)
    dm = tiny_datamodule()
    model = ProtoShapes(dm.num_classes)
    kwargs = trainer_kwargs(tmp_path, **overrides)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(model, datamodule=dm)
    for logger in trainer.loggers:
        logger.finalize("success")
    return model, trainer


def check_push(saved: dict, push_epoch: int) -> None:
    """Every prototype is the embedding patch of its recorded source image at its recorded position, of
    its own class, the nearest such patch to the prototype before the push; its box holds the patch."""
    dm = tiny_datamodule()
    dm.setup("fit")
    data = dm.train_set
    model = ProtoShapes(dm.num_classes)
    model.load_state_dict(saved["state"])
    model.eval()
    head = model.head
    before = saved["before"][push_epoch]
    with torch.no_grad():
        z = head.embed(model.features(data.images))  # [N, D, 8, 8]
        ph, pw = head.prototype_shape
        old = head.prototypes.detach().clone()
        head.prototypes.copy_(before)
        d_before = head.patch_distances(z)  # distances to the prototypes before the push
        head.prototypes.copy_(old)
        sims = head.similarity(head.patch_distances(z))
    for j in range(head.num_prototypes):
        src, (r, c) = int(head.prototype_source[j]), head.prototype_position[j].tolist()
        assert data.labels[src] == head.prototype_class[j]
        torch.testing.assert_close(head.prototypes[j], z[src, :, r : r + ph, c : c + pw], rtol=1e-5, atol=1e-6)
        own = data.labels == head.prototype_class[j]
        nearest = d_before[own, j].min()
        torch.testing.assert_close(d_before[src, j, r, c], nearest, rtol=1e-4, atol=1e-6)
        box = head.prototype_box[j]
        assert (
            box.tolist()
            == patch_boxes(head.prototype_position[j : j + 1], (ph, pw), z.shape[-2:], (16, 16))[0].tolist()
        )
        # the patch is the prototype's most similar spot on its source image (distance 0: similarity's maximum)
        assert sims[src, j, r, c] == sims[src, j].max()


def test_push_replaces_prototypes_by_nearest_real_patches(tmp_path: Path) -> None:
    out = tmp_path / "saved.pt"
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    push = PushRecorder(str(out)), PrototypePush(every_n_epochs=2, synchronous_logging=True)
    fit_proto(tmp_path, list(push), max_epochs=2, logger=logger)
    assert push[1].push_epochs == [1]
    check_push(torch.load(out, weights_only=True), push_epoch=1)
    (acc,) = read_tensorboard(logger.log_dir)
    assert len(acc.Images("prototypes/gallery")) == 1
    assert "xai/PrototypePush/mean_shift" in acc.Tags()["scalars"]


def test_push_changes_only_the_prototypes(tmp_path: Path) -> None:
    """RNG, modes, requires_grad, .grad and BatchNorm statistics are the same right before and right
    after the push; the training batches are the same with and without pushes."""
    before, after, stream = StateSnapshots(), StateSnapshots(), BatchLog()
    fit_proto(tmp_path, [before, PrototypePush(every_n_epochs=1, log_gallery=False), after, stream], max_epochs=2)
    assert len(before.snapshots) == len(after.snapshots) == 2
    for b, a in zip(before.snapshots, after.snapshots):
        assert torch.equal(b["rng"], a["rng"])
        assert b["modes"] == a["modes"] and b["requires_grad"] == a["requires_grad"]
        for gb, ga in zip(b["grads"], a["grads"]):
            assert (gb is None and ga is None) or torch.equal(gb, ga)
        assert all(torch.equal(b["buffers"][k], a["buffers"][k]) for k in b["buffers"])
        assert not torch.equal(b["prototypes"], a["prototypes"])  # the one intended change
    plain = BatchLog()
    fit_proto(tmp_path / "plain", [plain], max_epochs=2)
    assert stream.batches == plain.batches


def test_stages_follow_warmup_push_and_last_layer(tmp_path: Path) -> None:
    recorder = PushRecorder(str(tmp_path / "unused.pt"))
    stages = PrototypeStages(warm_epochs=1, last_layer_epochs=1, learning_rates={"last_layer": {"last_layer": 0.01}})
    model, trainer = fit_proto(
        tmp_path, [recorder, PrototypePush(every_n_epochs=2, log_gallery=False), stages], max_epochs=4, logger=False
    )
    assert stages.history == [(0, "warm"), (1, "joint"), (2, "last_layer"), (3, "joint")]
    assert recorder.requires_grad[0] == {"backbone": False, "prototypes": True, "last_layer": False}
    assert recorder.requires_grad[1] == {"backbone": True, "prototypes": True, "last_layer": False}
    assert recorder.requires_grad[2] == {"backbone": False, "prototypes": False, "last_layer": True}
    groups = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert groups["last_layer"] == 0.01 and groups["backbone"] == 1e-3


def test_monitor_does_not_perturb_training(tmp_path: Path) -> None:
    def run(with_monitor: bool) -> dict[str, torch.Tensor]:
        callbacks = [PrototypePush(every_n_epochs=1, log_gallery=False), PrototypeStages(warm_epochs=1)]
        logger = TensorBoardLogger(str(tmp_path / f"m{with_monitor}"))
        if with_monitor:
            callbacks.append(PrototypeMonitor(num_samples=3, top_k=2, synchronous_logging=True))
        model, _ = fit_proto(tmp_path / f"m{with_monitor}", callbacks, max_epochs=3, logger=logger)
        return model.state_dict()

    plain, observed = run(False), run(True)
    assert plain.keys() == observed.keys()
    for key in plain:
        assert torch.equal(plain[key], observed[key]), key
    (acc,) = read_tensorboard(tmp_path / "mTrue")
    tags = acc.Tags()["images"]
    assert sorted(tags) == [f"prototypes/this_looks_like_that/{i}" for i in range(3)]
    assert len(acc.Images("prototypes/this_looks_like_that/0")) == 3  # every epoch


def test_checkpoint_round_trip_restores_head_push_records_and_stage(tmp_path: Path) -> None:
    push, stages = PrototypePush(every_n_epochs=2, log_gallery=False), PrototypeStages(warm_epochs=1)
    model, trainer = fit_proto(tmp_path, [push, stages], max_epochs=3, logger=False)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    assert stages.stage == "last_layer" and push.push_epochs == [1]

    pl.seed_everything(1, verbose=False)
    fresh = ProtoShapes(3)
    push2, stages2 = PrototypePush(every_n_epochs=2, log_gallery=False), PrototypeStages(warm_epochs=1)
    resumed = pl.Trainer(callbacks=[push2, stages2], **trainer_kwargs(tmp_path, max_epochs=3, logger=False))
    resumed.fit(fresh, datamodule=tiny_datamodule(), ckpt_path=str(path))
    assert push2.push_epochs == [1] and stages2.stage == "last_layer" and stages2.history == stages.history
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    assert fresh.head.prototype_source.min() >= 0


def test_errors_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one PrototypeHead"):
        pl.Trainer(callbacks=[PrototypePush()], **trainer_kwargs(tmp_path, logger=False)).fit(
            tiny_model(3), datamodule=tiny_datamodule()
        )
    empty = DataLoader(LabelledImages(torch.zeros(0, 3, 16, 16), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="training dataset is empty"):
        pl.Trainer(callbacks=[PrototypePush()], **trainer_kwargs(tmp_path, logger=False)).fit(ProtoShapes(3), empty)
    images, labels = torch.rand(8, 3, 16, 16), torch.tensor([0, 2] * 4)
    missing = DataLoader(LabelledImages(images, labels), batch_size=4)
    with pytest.raises(ValueError, match=r"no image of class\(es\) \[1\]"):
        pl.Trainer(callbacks=[PrototypePush()], **trainer_kwargs(tmp_path, logger=False)).fit(ProtoShapes(3), missing)
    with pytest.raises(ValueError, match="Unknown stage"):
        PrototypeStages(learning_rates={"warmup": {"add_on": 1.0}})
    with pytest.raises(ValueError, match="top_k=99"):
        logger = TensorBoardLogger(str(tmp_path))
        pl.Trainer(callbacks=[PrototypeMonitor(top_k=99)], **trainer_kwargs(tmp_path, logger=logger)).fit(
            ProtoShapes(3), datamodule=tiny_datamodule()
        )


def test_ddp_spawn_push_reduces_over_ranks(tmp_path: Path) -> None:
    out = tmp_path / "saved.pt"
    logger = TensorBoardLogger(str(tmp_path), name="ddp")
    callbacks = [
        PushRecorder(str(out)),
        PrototypePush(every_n_epochs=2),
        PrototypeStages(warm_epochs=1),
        PrototypeMonitor(num_samples=3, top_k=2),
    ]
    fit_proto(
        tmp_path, callbacks, max_epochs=2, logger=logger, strategy="ddp_spawn_find_unused_parameters_true", devices=2
    )
    saved = torch.load(out, weights_only=True)
    assert saved["world_size"] == 2
    check_push(saved, push_epoch=1)  # nearest over the whole training set, not over one rank's half
    counts: dict[str, int] = {}
    for acc in read_tensorboard(Path(logger.save_dir)):
        for tag in acc.Tags()["images"]:
            counts[tag] = counts.get(tag, 0) + len(acc.Images(tag))
    assert counts["prototypes/gallery"] == 1  # rank zero wrote, once
    assert counts["prototypes/this_looks_like_that/2"] == 2  # every epoch


def test_stages_need_find_unused_parameters_under_ddp() -> None:
    from types import SimpleNamespace

    plain = SimpleNamespace(world_size=2, strategy=SimpleNamespace(_ddp_kwargs={}))
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        PrototypeStages().setup(plain, ProtoShapes(3), "fit")  # type: ignore[arg-type]
    unused = SimpleNamespace(world_size=2, strategy=SimpleNamespace(_ddp_kwargs={"find_unused_parameters": True}))
    PrototypeStages().setup(unused, ProtoShapes(3), "fit")  # type: ignore[arg-type]
