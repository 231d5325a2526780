"""PatternEstimator: never perturbs training, learns the toy's signal direction, checkpoints, files."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution import LRP, PatternAttribution, PatternNet, Saliency
from lightning_xai.attribution.propagation import get_patterns
from lightning_xai.callbacks import PatternEstimator
from tests.attribution.test_patterns import FILTER, SIGNAL, toy_data
from tests.helpers.logs import read_tensorboard
from tests.helpers.training import fit, trainer_kwargs


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_observe_never_perturb_bitwise(tmp_path: Path) -> None:
    """Same seed with and without the estimator: bitwise-identical weights and BatchNorm statistics."""
    reference = fit(tmp_path / "without", [], logger=TensorBoardLogger(str(tmp_path), name="a"))
    estimator = PatternEstimator()
    model = fit(tmp_path / "with", [estimator], logger=TensorBoardLogger(str(tmp_path), name="b"))
    ref, got = _weights(reference), _weights(model)
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"{k} differs with the estimator attached"
    assert _hook_count(model) == 0, "hooks left on the model after fit"
    assert sorted(estimator.patterns) == sorted(["features.0", "features.4", "features.7", "fc"])
    assert get_patterns(model) is not None
    tags = [t for acc in read_tensorboard(tmp_path / "b") for t in acc.Tags()["scalars"]]
    assert "xai/patterns/samples" in tags
    assert "xai/patterns/fc/active_fraction" in tags


class ToyRegression(pl.LightningModule):
    """Learns the filter w of the paper's linear toy by regressing the signal amplitude."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x)[:, 0], y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_toy_training_learns_filter_and_pattern(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    x, y = toy_data(2048)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    estimator = PatternEstimator(path=str(tmp_path / "patterns.pt"))
    model = ToyRegression()
    kwargs = trainer_kwargs(tmp_path, max_epochs=3, logger=TensorBoardLogger(str(tmp_path), name="toy"))
    pl.Trainer(callbacks=[estimator], **kwargs).fit(model, loader)
    torch.testing.assert_close(model.net.weight[0].detach(), FILTER, atol=0.02, rtol=0)
    torch.testing.assert_close(estimator.patterns["net"]["a_plus"][0], SIGNAL, atol=0.05, rtol=0)
    x_test, y_test = toy_data(8, seed=5)
    net = model.net.eval()
    for explainer in (PatternNet(), PatternNet(str(tmp_path / "patterns.pt"))):  # published / from the file
        signal = explainer(net, x_test, 0)
        assert F.cosine_similarity(signal, SIGNAL.expand_as(signal)).abs().min() > 0.99
    gradient = Saliency(abs=False)(net, x_test, 0)
    assert F.cosine_similarity(gradient, FILTER.expand_as(gradient)).min() > 0.999


def test_checkpoint_round_trip_and_state_key(tmp_path: Path) -> None:
    estimator = PatternEstimator(layers=["features.0", "fc"], reset_each_run=False)
    fit(
        tmp_path,
        [estimator],
        logger=TensorBoardLogger(str(tmp_path), name="c"),
        max_epochs=1,
        enable_checkpointing=True,
    )
    ckpt = next(Path(tmp_path).rglob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)["callbacks"][estimator.state_key]
    resumed = PatternEstimator(layers=["features.0", "fc"], reset_each_run=False)
    assert resumed.state_key == estimator.state_key
    resumed.load_state_dict(state)
    for name in ("features.0", "fc"):
        torch.testing.assert_close(resumed.patterns[name]["a_plus"], estimator.patterns[name]["a_plus"].cpu())
        assert torch.equal(resumed.statistics.sums[name]["n_plus"], estimator.statistics.sums[name]["n_plus"].cpu())
    assert estimator.state_key == (
        "PatternEstimator{'every_n_epochs': 1, 'every_n_steps': None, 'layers': ['features.0', 'fc']}"
    )
    assert PatternEstimator().state_key != estimator.state_key


def test_hooks_removed_when_training_fails(tmp_path: Path) -> None:
    class Failing(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
            raise RuntimeError("boom")

    estimator = PatternEstimator()
    from tests.helpers.data import tiny_datamodule
    from tests.helpers.lightning_modules import tiny_model

    model = tiny_model()
    trainer = pl.Trainer(
        callbacks=[estimator, Failing()], **trainer_kwargs(tmp_path, logger=TensorBoardLogger(str(tmp_path)))
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(model, datamodule=tiny_datamodule())
    assert _hook_count(model) == 0


def test_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="layers"):
        PatternEstimator(layers="fc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every_n_epochs"):
        PatternEstimator(every_n_epochs=0)
    with pytest.raises(ValueError, match="features.99"):
        fit(tmp_path, [PatternEstimator(layers=["features.99"])], logger=TensorBoardLogger(str(tmp_path)))


def test_saliency_monitor_uses_the_latest_patterns(tmp_path: Path) -> None:
    """PatternNet() / PatternAttribution() in a SaliencyMonitor read what the estimator published
    (initial patterns from one training batch at fit start, so the monitor's dry run works)."""
    from lightning_xai.callbacks import SaliencyMonitor

    estimator = PatternEstimator()
    monitor = SaliencyMonitor([PatternNet(), PatternAttribution(), LRP()], num_samples=3)
    fit(tmp_path, [estimator, monitor], logger=TensorBoardLogger(str(tmp_path), name="s"), max_epochs=1)
    for name in ("pattern_net", "pattern_attribution", "lrp"):
        (epoch, overlays), *_ = monitor.history(name)
        assert overlays.shape[0] == 3 and torch.isfinite(overlays).all()
