"""PrototypePush, PrototypeStages and PrototypeMonitor on a tiny prototype network."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_xai.callbacks import PrototypeMonitor, PrototypePush, PrototypeStages
from lightning_xai.modules import patch_boxes
from tests.helpers.callbacks import BatchLog, PushRecorder, StateSnapshots
from tests.helpers.data import LabelledImages, tiny_datamodule
from tests.helpers.lightning_modules import ProtoShapes, tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import trainer_kwargs


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


EPS = torch.finfo(torch.float32).eps
# An embedding value recomputed with another batch split (the push's batches, a rank's share) differs in rounding:
# a sigmoid of 5 float32 layers (largest fan-in 72, a 3x3 conv over 8 channels), each sum rounded in another order
# (about sqrt(fan_in) eps relative, statistically), with a margin of 8.
TOL_Z = 8 * 5 * math.sqrt(72) * EPS


def distance_tolerance(z2: torch.Tensor, p2: torch.Tensor, dim: int) -> torch.Tensor:
    """Rounding of a squared distance ``||z||^2 - 2 z.p + ||p||^2`` in float32, computed by the push and by the
    test from embeddings that may differ by ``TOL_Z``: the expansion cancels near the nearest patch, leaving a few
    eps of its terms (8 eps (||z||^2 + ||p||^2)); an embedding error moves it by at most
    ``2 sqrt(dim) TOL_Z ||z - p|| + dim TOL_Z^2``, with ``||z - p|| <= ||z|| + ||p||``."""
    size = z2.sqrt() + p2.sqrt()
    return 8 * EPS * (z2 + p2) + 2 * math.sqrt(dim) * TOL_Z * size + dim * TOL_Z**2


def check_push(saved: dict, push_epoch: int) -> None:
    """Every prototype is the embedding patch of its recorded source image at its recorded position, of its own
    class, and as near to the prototype before the push as the nearest such patch (ties are ties: identical
    background patches are equally near, and the push computed on other batches than this check, so the chosen
    patch need only be within the float32 tolerance of the best); its box holds the patch."""
    dm = tiny_datamodule()
    dm.setup("fit")
    data = dm.train_set
    model = ProtoShapes(dm.num_classes)
    model.load_state_dict(saved["after"][push_epoch])  # the model right after the push (training goes on after it)
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
        d_after = head.patch_distances(z)
        z2 = z.square().sum(1).amax()  # the largest ||z||^2 (1x1 patches)
    dim = head.prototype_dim
    for j in range(head.num_prototypes):
        src, (r, c) = int(head.prototype_source[j]), head.prototype_position[j].tolist()
        assert data.labels[src] == head.prototype_class[j]
        torch.testing.assert_close(head.prototypes[j], z[src, :, r : r + ph, c : c + pw], rtol=0, atol=TOL_Z)
        own = data.labels == head.prototype_class[j]
        tol_before = distance_tolerance(z2, before[j].square().sum(), dim)
        assert d_before[src, j, r, c] <= d_before[own, j].min() + 2 * tol_before  # push's and ours each within tol
        box = head.prototype_box[j]
        assert (
            box.tolist()
            == patch_boxes(head.prototype_position[j : j + 1], (ph, pw), z.shape[-2:], (16, 16))[0].tolist()
        )
        # the patch is the prototype's nearest spot on its source image (distance ~0), so its most similar one;
        # the similarity log((d+1)/(d+eps)) is steep there (slope up to (1-eps)/eps = 1e4), so its tolerance is
        # the distance's times that slope: compared in distance, where the question is well conditioned
        tol = distance_tolerance(z2, head.prototypes[j].square().sum(), dim)
        assert d_after[src, j, r, c] <= d_after[src, j].min() + tol
        sims = head.similarity(d_after[src, j])
        slope = (1 - head.epsilon) / head.epsilon
        assert sims[r, c] >= sims.max() - slope * tol


def test_push_replaces_prototypes_by_nearest_real_patches(tmp_path: Path) -> None:
    out = tmp_path / "saved.pt"
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    push = PushRecorder(str(out)), PrototypePush(every_n_epochs=2, synchronous_logging=True)
    fit_proto(tmp_path, list(push), max_epochs=3, logger=logger)
    assert push[1].push_epochs == [1]
    check_push(torch.load(out, weights_only=True), push_epoch=1)
    (acc,) = read_tensorboard(logger.log_dir)
    assert len(acc.Images("xai/prototypes/gallery")) == 1
    assert "xai/prototypes/push/mean_shift" in acc.Tags()["scalars"]


def test_push_changes_only_the_prototypes(tmp_path: Path) -> None:
    """RNG, modes, requires_grad, .grad and BatchNorm statistics are the same right before and right
    after the push; the training batches are the same with and without pushes. No push on the final epoch."""
    before, after, stream = StateSnapshots(), StateSnapshots(), BatchLog()
    push = PrototypePush(every_n_epochs=1, log_gallery=False)
    with pytest.warns(UserWarning, match=r"after epoch\(s\) \[2\] are skipped"):
        fit_proto(tmp_path, [before, push, after, stream], max_epochs=3)
    assert push.push_epochs == [0, 1]
    assert len(before.snapshots) == len(after.snapshots) == 3
    assert torch.equal(before.snapshots[2]["prototypes"], after.snapshots[2]["prototypes"])  # no final push
    for b, a in zip(before.snapshots[:2], after.snapshots[:2]):
        assert torch.equal(b["rng"], a["rng"])
        assert b["modes"] == a["modes"] and b["requires_grad"] == a["requires_grad"]
        for gb, ga in zip(b["grads"], a["grads"]):
            assert (gb is None and ga is None) or torch.equal(gb, ga)
        assert all(torch.equal(b["buffers"][k], a["buffers"][k]) for k in b["buffers"])
        assert not torch.equal(b["prototypes"], a["prototypes"])  # the one intended change
    plain = BatchLog()
    fit_proto(tmp_path / "plain", [plain], max_epochs=3)
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
        callbacks = [
            PrototypePush(every_n_epochs=1, log_gallery=False),
            PrototypeStages(warm_epochs=1, last_layer_epochs=1),
        ]
        logger = TensorBoardLogger(str(tmp_path / f"m{with_monitor}"))
        if with_monitor:
            callbacks.append(PrototypeMonitor(num_samples=3, prototypes_per_image=2, synchronous_logging=True))
        model, _ = fit_proto(tmp_path / f"m{with_monitor}", callbacks, max_epochs=3, logger=logger)
        return model.state_dict()

    plain, observed = run(False), run(True)
    assert plain.keys() == observed.keys()
    for key in plain:
        assert torch.equal(plain[key], observed[key]), key
    (acc,) = read_tensorboard(tmp_path / "mTrue")
    tags = acc.Tags()["images"]
    assert sorted(tags) == [f"xai/prototypes/this_looks_like_that/{i}" for i in range(3)]
    assert len(acc.Images("xai/prototypes/this_looks_like_that/0")) == 3  # every epoch


def test_checkpoint_round_trip_restores_head_push_records_and_stage(tmp_path: Path) -> None:
    push = PrototypePush(every_n_epochs=2, log_gallery=False)
    stages = PrototypeStages(warm_epochs=1, last_layer_epochs=1)
    model, trainer = fit_proto(tmp_path, [push, stages], max_epochs=3, logger=False)
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    assert stages.stage == "last_layer" and push.push_epochs == [1]

    pl.seed_everything(1, verbose=False)
    fresh = ProtoShapes(3)
    push2 = PrototypePush(every_n_epochs=2, log_gallery=False)
    stages2 = PrototypeStages(warm_epochs=1, last_layer_epochs=1)
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
    with pytest.raises(ValueError, match="prototypes_per_image=99"):
        logger = TensorBoardLogger(str(tmp_path))
        pl.Trainer(
            callbacks=[PrototypeMonitor(prototypes_per_image=99)], **trainer_kwargs(tmp_path, logger=logger)
        ).fit(ProtoShapes(3), datamodule=tiny_datamodule())


def test_ddp_spawn_push_reduces_over_ranks(tmp_path: Path) -> None:
    out = tmp_path / "saved.pt"
    logger = TensorBoardLogger(str(tmp_path), name="ddp")
    callbacks = [
        PushRecorder(str(out)),
        PrototypePush(every_n_epochs=2),
        PrototypeStages(warm_epochs=1, last_layer_epochs=1),
        PrototypeMonitor(num_samples=3, prototypes_per_image=2),
    ]
    fit_proto(
        tmp_path, callbacks, max_epochs=3, logger=logger, strategy="ddp_spawn_find_unused_parameters_true", devices=2
    )
    saved = torch.load(out, weights_only=True)
    assert saved["world_size"] == 2
    check_push(saved, push_epoch=1)  # nearest over the whole training set, not over one rank's half
    counts: dict[str, int] = {}
    for acc in read_tensorboard(Path(logger.save_dir)):
        for tag in acc.Tags()["images"]:
            counts[tag] = counts.get(tag, 0) + len(acc.Images(tag))
    assert counts["xai/prototypes/gallery"] == 1  # rank zero wrote, once
    assert counts["xai/prototypes/this_looks_like_that/2"] == 3  # every epoch


def test_stages_need_find_unused_parameters_under_ddp() -> None:
    from types import SimpleNamespace

    plain = SimpleNamespace(world_size=2, strategy=SimpleNamespace(_ddp_kwargs={}))
    with pytest.raises(ValueError, match="ddp_find_unused_parameters_true"):
        PrototypeStages().setup(plain, ProtoShapes(3), "fit")  # type: ignore[arg-type]
    unused = SimpleNamespace(world_size=2, strategy=SimpleNamespace(_ddp_kwargs={"find_unused_parameters": True}))
    PrototypeStages().setup(unused, ProtoShapes(3), "fit")  # type: ignore[arg-type]


def test_schedule_leaves_room_for_the_last_layer_stage() -> None:
    """The reference's defaults (a push every 10 warm/joint epochs, 20 last-layer epochs after it): pushes never
    fall inside a last-layer stage, each is followed by its whole stage, and a push that would not fit is skipped."""
    stages, push = PrototypeStages(warm_epochs=5), PrototypePush(every_n_epochs=10)
    assert stages.last_layer_epochs == 20
    pushes, skipped = push.plan(100, stages)
    assert pushes == [9, 39, 69] and skipped == [99]
    seq = [stages.stage_at(e, pushes) for e in range(100)]
    assert seq[:5] == ["warm"] * 5 and seq[5:10] == ["joint"] * 5
    for i, p in enumerate(pushes):
        assert seq[p] != "last_layer" and seq[p + 1 : p + 21] == ["last_layer"] * 20
        assert sum(stage != "last_layer" for stage in seq[: p + 1]) == 10 * (i + 1)  # the period counts those
    assert seq[90:] == ["joint"] * 10
    for e in range(100):  # the O(pushes) count agrees with stage_at
        assert stages.last_layer_epochs_through(e, pushes) == seq[: e + 1].count("last_layer")
    assert push.plan(29, stages) == ([], [9, 19])  # 9 + 20 epochs do not fit in 29: no push, no unvalidated one
    assert push.plan(30, stages) == ([9], [])
    assert PrototypePush(every_n_epochs=2).plan(4) == ([1], [3])  # without stages: never on the final epoch


def test_fit_ends_on_the_validated_model(tmp_path: Path) -> None:
    """The last push is followed by its validated last-layer epoch, so the returned model is the one the last
    validation measured: validating it again gives exactly the last logged val/acc (same model, same batches)."""
    push, stages = (
        PrototypePush(every_n_epochs=2, log_gallery=False),
        PrototypeStages(warm_epochs=1, last_layer_epochs=1),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a schedule that fits warns nothing
        warnings.filterwarnings("ignore", message=".*(does not have many workers|val_dataloader|train_dataloader).*")
        model, trainer = fit_proto(tmp_path, [push, stages], max_epochs=3, logger=False)
    assert push.push_epochs == [1] and stages.history[-1] == (2, "last_layer")
    logged = trainer.callback_metrics["val/acc"].item()
    (validated,) = trainer.validate(model, datamodule=tiny_datamodule(), verbose=False)
    assert validated["val/acc"] == logged
    assert push.push_epochs == [1]  # validating pushes nothing


def test_push_due_on_the_final_epoch_is_skipped_with_a_warning(tmp_path: Path) -> None:
    push = PrototypePush(every_n_epochs=2, log_gallery=False)
    with pytest.warns(UserWarning, match=r"after epoch\(s\) \[1\] are skipped.*no push runs.*max_epochs=3"):
        model, _ = fit_proto(tmp_path, [push], max_epochs=2, logger=False)
    assert push.push_epochs == [] and model.head.prototype_source.tolist() == [-1] * model.head.num_prototypes
    from types import SimpleNamespace

    stages = PrototypeStages(warm_epochs=1, last_layer_epochs=2)
    trainer = SimpleNamespace(max_epochs=2, callbacks=[stages])
    with pytest.warns(UserWarning, match=r"\[0, 1\] are skipped: its 2 last-layer epoch\(s\).*max_epochs=3"):
        PrototypePush(every_n_epochs=1)._warn_skipped(trainer)  # type: ignore[arg-type]
