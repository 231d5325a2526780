"""TracInMonitor: online sums equal offline TracIn and captum over the checkpoints it writes; logs
read back; never perturbs training; checkpoint round trip; DDP equals one process."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from lightning_xai.callbacks import TracInMonitor
from lightning_xai.data.probe import Probe
from lightning_xai.influence import TracIn, load_tracin_checkpoint, tracin_checkpoints
from tests.helpers.callbacks import RecordingTracInMonitor
from tests.helpers.data import tiny_datamodule
from tests.helpers.lightning_modules import tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit


def _train_tensors(**dm_kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    dm = tiny_datamodule(**dm_kwargs)
    dm.setup("fit")
    items = [dm.train_set[i] for i in range(len(dm.train_set))]
    return torch.stack([it[0] for it in items]), torch.stack([torch.as_tensor(it[1]) for it in items])


def test_online_sums_equal_offline_tracin_and_captum_on_its_checkpoints(tmp_path: Path) -> None:
    monitor = TracInMonitor(
        gradient_layers=None,
        num_samples=3,
        num_top_examples=6,
        save_checkpoints=True,
        checkpoint_dir=str(tmp_path / "ck"),
    )
    model = fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path), name="tb"), max_epochs=2)
    assert monitor.lr_source == "optimizer 0, param group 0"
    assert [c["epoch"] for c in monitor.checkpoints] == [0, 1]
    checkpoints = tracin_checkpoints(tmp_path / "ck")
    assert [lr for _, lr in checkpoints] == [c["learning_rate"] for c in monitor.checkpoints]
    x, y = _train_tensors()
    offline = TracIn().self_influence(model, checkpoints, x, y)
    torch.testing.assert_close(monitor.self_influence.float(), offline, rtol=1e-4, atol=1e-6 * float(offline.max()))
    probe = monitor.probe.to("cpu")
    scores = TracIn().scores(model, checkpoints, x, y, probe.inputs, probe.targets)
    scale = float(scores.abs().max())
    torch.testing.assert_close(monitor.probe_scores.float(), scores, rtol=1e-4, atol=1e-5 * scale)

    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    oracle = TracInCP(
        copy.deepcopy(model).eval(),
        TensorDataset(x, y),
        checkpoints=[p for p, _ in checkpoints],
        checkpoints_load_func=load_tracin_checkpoint,
        loss_fn=torch.nn.CrossEntropyLoss(reduction="none"),
        batch_size=16,
        sample_wise_grads_per_batch=False,
    )
    theirs = oracle.self_influence()
    torch.testing.assert_close(monitor.self_influence.float(), theirs, rtol=1e-4, atol=1e-6 * float(theirs.max()))


def test_tensorboard_images_histogram_scalars_table(tmp_path: Path) -> None:
    monitor = TracInMonitor(num_samples=2, num_top_examples=4)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(tmp_path, [monitor], logger=logger, max_epochs=2)
    (acc,) = read_tensorboard(logger.log_dir)
    images = acc.Tags()["images"]
    assert len(acc.Images("xai/tracin/self_influence_top")) == 2
    assert {"xai/tracin/proponents/00", "xai/tracin/proponents/01"} <= set(images)
    assert "xai/tracin/top_self_influence" in images  # the table as one labelled picture
    assert len(acc.Histograms("xai/tracin/self_influence")) == 2
    lr = acc.Scalars("xai/tracin/learning_rate")
    assert [s.value for s in acc.Scalars("xai/tracin/checkpoints")] == [1.0, 2.0]
    assert lr[0].value == pytest.approx(3e-3)
    table = acc.Tensors("xai/tracin/top_self_influence/text_summary")
    text = table[-1].tensor_proto.string_val[0].decode()
    top = monitor.self_influence.topk(4).indices.tolist()
    assert f"| 0 | {top[0]} |" in text


def test_wandb_offline_images_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="xai-test")
    fit(tmp_path, [TracInMonitor(num_samples=2, num_top_examples=4)], logger=logger, max_epochs=1)
    logger.experiment.finish()
    (run,) = list((tmp_path / "wandb").glob("offline-run-*"))
    media = run / "files" / "media"
    assert list(media.rglob("self_influence_top_*.png")), list(media.rglob("*"))
    assert list(media.rglob("*top_self_influence*.table.json")), list(media.rglob("*"))


def _weights(tmp_path: Path, callbacks: list) -> dict[str, torch.Tensor]:
    model = fit(tmp_path, callbacks, logger=TensorBoardLogger(str(tmp_path), name="w"), max_epochs=2)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_observe_never_perturb_bitwise(tmp_path: Path) -> None:
    reference = _weights(tmp_path / "without", [])
    monitor = TracInMonitor(num_samples=2, num_top_examples=4, save_checkpoints=True)
    with_monitor = _weights(tmp_path / "with", [monitor])
    for k in reference:
        assert torch.equal(reference[k], with_monitor[k]), f"{k} differs with the monitor attached"
    assert len(monitor.checkpoints) == 2


def test_checkpoint_round_trip_keeps_the_sums(tmp_path: Path) -> None:
    monitor = TracInMonitor(num_samples=2, num_top_examples=4)
    fit(
        tmp_path / "a",
        [monitor],
        logger=TensorBoardLogger(str(tmp_path / "a"), name="c"),
        max_epochs=2,
        enable_checkpointing=True,
    )
    ckpt = next((tmp_path / "a").rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)["callbacks"][monitor.state_key]
    assert torch.equal(state["self_influence"], monitor.self_influence)
    assert torch.equal(state["probe_scores"], monitor.probe_scores)

    resumed = TracInMonitor(num_samples=2, num_top_examples=4)
    assert resumed.state_key == monitor.state_key
    import pytorch_lightning as pl

    from tests.helpers.training import trainer_kwargs

    trainer = pl.Trainer(
        callbacks=[resumed],
        **trainer_kwargs(tmp_path / "b", max_epochs=3, logger=TensorBoardLogger(str(tmp_path / "b"))),
    )
    trainer.fit(tiny_model(), datamodule=tiny_datamodule(), ckpt_path=str(ckpt))
    assert [c["epoch"] for c in resumed.checkpoints] == [0, 1, 2]
    assert torch.equal(Probe.from_state_dict(state["probe"]).inputs, resumed.probe.inputs.cpu())
    added = resumed.self_influence - state["self_influence"]
    assert (added > 0).all(), "the third checkpoint adds to the restored sums"


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.numerics
def test_ddp_spawn_equals_one_process(tmp_path: Path) -> None:
    out_file = tmp_path / "published.pt"
    monitor = RecordingTracInMonitor(str(out_file), gradient_layers=None, num_samples=3, num_top_examples=4)
    fit(
        tmp_path,
        [monitor],
        logger=TensorBoardLogger(str(tmp_path), name="ddp"),
        max_epochs=1,
        strategy="ddp_spawn",
        devices=2,
    )
    published = torch.load(out_file, weights_only=True)
    assert published["world_size"] == 2
    model = tiny_model(3)
    model.load_state_dict(published["weights"])
    x, y = _train_tensors()
    checkpoint = [(published["weights"], published["learning_rate"])]
    one_process = TracIn().self_influence(model, checkpoint, x, y)
    torch.testing.assert_close(
        published["self_influence"].float(), one_process, rtol=1e-5, atol=1e-7 * float(one_process.max())
    )
    probe = Probe.from_state_dict(published["probe"])
    scores = TracIn().scores(model, checkpoint, x, y, probe.inputs, probe.targets)
    torch.testing.assert_close(
        published["probe_scores"].float(), scores, rtol=1e-5, atol=1e-6 * float(scores.abs().max())
    )


def test_configuration_errors_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_top_examples"):
        TracInMonitor(num_top_examples=0)
    with pytest.raises(ValueError, match="features.99"):
        fit(tmp_path, [TracInMonitor(gradient_layers=["features.99"])], logger=TensorBoardLogger(str(tmp_path)))
    a, b = TracInMonitor(gradient_layers=["fc"]), TracInMonitor()
    assert a.state_key != b.state_key
    assert a.state_key == TracInMonitor(gradient_layers=["fc"], num_top_examples=3).state_key


def test_the_default_counts_the_last_linear_layer_and_a_tuple_output_works(tmp_path: Path) -> None:
    # the cheap default (the head), equal to TracIn over that layer; `output=` reads a tuple's logits
    monitor = TracInMonitor(
        num_samples=2, num_top_examples=4, save_checkpoints=True, checkpoint_dir=str(tmp_path / "ck")
    )
    model = fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path)), max_epochs=1)
    last = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][-1]
    assert monitor.layers == [last]
    x, y = _train_tensors()
    checkpoints = tracin_checkpoints(tmp_path / "ck")
    offline = TracIn(layers=[last]).self_influence(model, checkpoints, x, y)
    torch.testing.assert_close(monitor.self_influence.float(), offline, rtol=1e-4, atol=1e-6 * float(offline.max()))

    class Pair(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inner(x), x.mean()

    wrapped = Pair(model)
    state = {f"inner.{k}": v for k, v in model.state_dict().items()}
    ours = TracIn(layers=[f"inner.{last}"], output=0).self_influence(wrapped, [(state, 0.1)], x, y)
    plain = TracIn(layers=[last]).self_influence(model, [(model.state_dict(), 0.1)], x, y)
    torch.testing.assert_close(ours, plain)
    with pytest.raises(ValueError, match="one row per input"):
        TracIn(layers=[f"inner.{last}"]).self_influence(wrapped, [(state, 0.1)], x, y)
