"""TCAVMonitor and DissectionMonitor: logs read back (TensorBoard, W&B offline), checkpoint round
trip, bitwise-identical training, 2-process DDP equals one process, errors at setup."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from lightning_xai.callbacks import DissectionMonitor, TCAVMonitor
from lightning_xai.concepts import TCAV, NetworkDissection
from tests.helpers.callbacks import RecordingDissectionMonitor, RecordingTCAVMonitor
from tests.helpers.data import tiny_concepts
from tests.helpers.lightning_modules import tiny_model
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit

LAYERS = ["features.7", "features.8"]


def _tcav(**kwargs) -> TCAVMonitor:
    sets = tiny_concepts()
    defaults = dict(
        concepts={k: v.images for k, v in sets.items()}, layers=LAYERS, target_classes=[0, 2], n_random=3, num_samples=6
    )
    defaults.update(kwargs)
    return TCAVMonitor(**defaults)


def _dissection(**kwargs) -> DissectionMonitor:
    defaults = dict(layer="features.8", concepts=tiny_concepts(6, ("circle", "red", "marker_square")), quantile=0.02)
    defaults.update(kwargs)
    return DissectionMonitor(**defaults)


def test_tensorboard_read_back(tmp_path: Path) -> None:
    tcav, dissection = _tcav(relative=[("circle", "marker_square")]), _dissection()
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, [tcav, dissection], logger=logger, max_epochs=2)
    (acc,) = read_tensorboard(logger.log_dir)
    scalars = acc.Tags()["scalars"]
    for concept in ("circle", "marker_square"):
        for layer in LAYERS:
            for cls in ("square", "triangle"):  # the datamodule's class names for classes 0 and 2
                key = f"xai/tcav/{layer}/{concept}/{cls}"
                values = [e.value for e in acc.Scalars(f"{key}/score")]
                assert len(values) == 2 and all(math.isfinite(v) for v in values)
                assert all(0.0 <= e.value <= 1.0 for e in acc.Scalars(f"{key}/sign_count"))
                assert {e.value for e in acc.Scalars(f"{key}/significant")} <= {0.0, 1.0}
                assert f"{key}/cav_accuracy" in scalars and f"{key}/p_value" in scalars
    relative = "xai/tcav/features.8/circle-vs-marker_square/square/score"
    assert len(acc.Scalars(relative)) == 2
    for layer in LAYERS:
        assert len(acc.Images(f"xai/tcav/{layer}/summary")) == 2 and len(acc.Images(f"xai/tcav/{layer}/history")) == 2
    assert "xai/tcav/table/text_summary" in acc.Tags()["tensors"]
    assert not [t for t in scalars if t.startswith("tcav")]  # everything under xai/
    # the logged scores are the monitor's history
    last = tcav.history[-1]["results"]
    assert acc.Scalars("xai/tcav/features.7/circle/triangle/score")[-1].value == pytest.approx(float(last[1, 0, 0, 0]))
    projector = Path(logger.log_dir) / "projector_config.pbtxt"
    assert projector.exists() and "xai/tcav/features.7/cavs" in projector.read_text()
    counts = [e.value for e in acc.Scalars("xai/dissection/features.8/interpretable_units")]
    assert len(counts) == 2 and counts[-1] == dissection.history[-1]["iou"].max(1).values.gt(0.04).sum()
    assert len(acc.Images("xai/dissection/features.8/top_units")) == 2
    assert len(acc.Images("xai/dissection/features.8/detectors")) == 2


def test_wandb_offline_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="xai-test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, [_tcav(layers=["features.8"], target_classes=[1])], logger=logger, max_epochs=1)
    logger.experiment.finish()
    (run,) = list((tmp_path / "wandb").glob("offline-run-*"))
    media = run / "files" / "media"
    pngs = [str(p) for p in media.rglob("*.png")]
    assert any("xai/tcav/features.8/summary" in p for p in pngs) and any(
        "xai/tcav/features.8/history" in p for p in pngs
    ), pngs
    assert [p for p in media.rglob("*.table.json") if "tcav" in str(p)], list(media.rglob("*"))


def test_checkpoint_round_trip_keeps_history(tmp_path: Path) -> None:
    tcav, dissection = _tcav(target_classes=[1]), _dissection()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(
            tmp_path,
            [tcav, dissection],
            logger=TensorBoardLogger(str(tmp_path)),
            max_epochs=2,
            enable_checkpointing=True,
        )
    state = torch.load(next(Path(tmp_path).rglob("*.ckpt")), weights_only=True)["callbacks"]
    for monitor, fresh, key in ((tcav, _tcav(target_classes=[1]), "results"), (dissection, _dissection(), "iou")):
        assert fresh.state_key == monitor.state_key
        fresh.load_state_dict(state[monitor.state_key])
        assert [h["epoch"] for h in fresh.history] == [0, 1]
        assert torch.equal(fresh.history[-1][key], monitor.history[-1][key])
    # pinned: changing it orphans the monitor state in users' existing checkpoints
    assert tcav.state_key == (
        "TCAVMonitor{'concepts': ('circle', 'marker_square'), 'layers': ('features.7', 'features.8'), "
        "'target_classes': (1,), 'every_n_epochs': 1, 'every_n_steps': None}"
    )


def test_observe_never_perturb_bitwise(tmp_path: Path) -> None:
    def weights(path: Path, callbacks: list) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit(path, callbacks, logger=TensorBoardLogger(str(path)), max_epochs=2)
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    reference = weights(tmp_path / "without", [])
    monitors = [_tcav(target_classes=[0]), _dissection(every_n_epochs=1)]
    attached = weights(tmp_path / "with", monitors)
    assert all(torch.equal(reference[k], attached[k]) for k in reference)
    assert all(len(m.history) == 2 for m in monitors)


@pytest.mark.ddp
@pytest.mark.slow
@pytest.mark.numerics
def test_ddp_spawn_two_processes_equal_one(tmp_path: Path) -> None:
    tcav_file, dis_file = tmp_path / "tcav.pt", tmp_path / "dissection.pt"
    sets = tiny_concepts()
    concepts = {k: v.images for k, v in sets.items()}
    tcav = RecordingTCAVMonitor(
        str(tcav_file), concepts=concepts, layers=LAYERS, target_classes=[0, 1, 2], n_random=3, num_samples=6
    )
    dis_sets = tiny_concepts(6, ("circle", "red"))
    dissection = RecordingDissectionMonitor(str(dis_file), layer="features.8", concepts=dis_sets, quantile=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(
            tmp_path,
            [tcav, dissection],
            logger=TensorBoardLogger(str(tmp_path)),
            max_epochs=1,
            strategy="ddp_spawn",
            devices=2,
        )

    published = torch.load(tcav_file, weights_only=True)
    assert published["world_size"] == 2 and published["packed"].shape[0] == 3  # 2 + 2 classes, padding dropped
    model = tiny_model(3)
    model.load_state_dict(published["weights"])
    model.eval()
    single = TCAV(LAYERS, n_random=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cavs = single.fit(model, concepts, published["randoms"])
    for t in range(3):
        result = single.score(model, published["inputs"][t], t, cavs)
        for c, _concept in enumerate(concepts):
            for li, _layer in enumerate(LAYERS):
                row = published["packed"][t, c, li]
                assert float(row[0]) == pytest.approx(float(result.score[c, li]), rel=1e-4, abs=1e-6)
                assert float(row[2]) == pytest.approx(float(result.p_value[c, li]), rel=1e-4, abs=1e-9)

    published = torch.load(dis_file, weights_only=True)
    model.load_state_dict(published["weights"])
    images = torch.cat([s.images for s in dis_sets.values()])
    masks = {}
    start = 0
    for name, s in dis_sets.items():
        m = torch.zeros(images.shape[0], 16, 16)
        m[start : start + len(s)] = s.masks[:, 0]
        masks[name] = m
        start += len(s)
    expected = NetworkDissection("features.8", quantile=0.02)(model, images, masks)
    torch.testing.assert_close(published["thresholds"], expected.thresholds, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(published["iou"], expected.iou, rtol=0, atol=1e-3)


def test_setup_errors_name_the_value(tmp_path: Path) -> None:
    def setup_error(monitor, match):
        with pytest.raises(ValueError, match=match):
            fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path)), max_epochs=1)

    images = tiny_concepts()["circle"].images
    setup_error(_tcav(concepts={"few": images[:3]}), "'few' has 3 examples; at least 4")
    setup_error(
        _tcav(concepts={"big": torch.rand(8, 1, 16, 16)}), r"'big' examples of shape \[1, 16, 16\] do not fit the model"
    )
    setup_error(_tcav(layers=["features.77"]), "no layer named 'features.77'")
    setup_error(_tcav(target_classes=[5]), "target class 5 is out of range")
    setup_error(_dissection(layer="fc"), "dissection needs")
    with pytest.raises(ValueError, match="`n_random` to be an int >= 2, but got 1"):
        _tcav(n_random=1)


def test_near_chance_concept_is_warned_once_and_marked(tmp_path: Path) -> None:
    from lightning_xai.data import ShapesDataset

    noise = {"noise": ShapesDataset(8, image_size=16, num_classes=3, seed=5).images}  # just like the random examples
    monitor = _tcav(concepts=noise, layers=["features.8"], target_classes=[0])
    with pytest.warns(UserWarning, match="concept 'noise' at layer 'features.8'.*near chance") as record:
        fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path)), max_epochs=2)
    assert sum("near chance" in str(w.message) for w in record) == 1
    assert monitor.history[-1]["results"][0, 0, 0, 5] == 0  # separates = False, in the logs' table too


def test_inputs_only_for_scored_classes_and_sets_stay_on_cpu(tmp_path: Path) -> None:
    """Only the scored class's inputs are read and kept, and every set stays on the CPU; the
    class-0 inputs a class-balanced probe over every class would hold are never selected."""
    x = torch.rand(60, 3, 16, 16)
    y = torch.arange(60) % 3
    monitor = _tcav(target_classes=[2], probe=(x, y), num_samples=5, layers=["features.8"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(tmp_path, [monitor], logger=TensorBoardLogger(str(tmp_path)), max_epochs=1)
    assert list(monitor._inputs) == [2] and monitor._inputs[2].shape[0] == 5
    chosen = monitor._inputs[2]
    assert all(bool((chosen[i] == x[y == 2]).flatten(1).all(1).any()) for i in range(5))
    assert all(t.device.type == "cpu" for t in [*monitor._concepts.values(), *monitor._randoms, chosen])


def test_grayscale_image_folders(tmp_path: Path) -> None:
    """A folder of grayscale PNGs is read with the channel count and size the model takes
    (``image_mode``, ``image_size``); read wrongly, the error names the set and the fix."""
    import numpy as np
    from PIL import Image
    from torch import nn

    from lightning_xai.concepts import load_examples

    folder = tmp_path / "stripes"
    folder.mkdir()
    for i in range(6):
        pixels = (np.random.default_rng(i).random((20, 20)) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    assert load_examples(folder, mode="L", image_size=16).shape == (6, 1, 16, 16)
    assert load_examples(folder).shape == (6, 3, 20, 20)
    gray = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2))
    result = TCAV("1", n_random=2)(
        gray,
        torch.rand(5, 1, 16, 16),
        0,
        {"stripes": load_examples(folder, mode="L", image_size=16)},
        torch.rand(20, 1, 16, 16),
    )
    assert result.score.shape == (1, 1)

    def monitor(**kwargs):
        return _tcav(concepts={"stripes": str(folder)}, layers=["features.8"], target_classes=[0], **kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(
            ValueError, match=r"'stripes' examples of shape \[1, 16, 16\] do not fit.*image folder: pass `image_mode="
        ):
            fit(
                tmp_path,
                [monitor(image_mode="L", image_size=16)],
                logger=TensorBoardLogger(str(tmp_path)),
                max_epochs=1,
            )
        good = monitor(image_size=16)  # the shapes model takes RGB 16 x 16
        fit(tmp_path, [good], logger=TensorBoardLogger(str(tmp_path)), max_epochs=1)
    assert len(good.history) == 1
