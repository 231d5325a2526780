"""PatternEstimator under DDP: 2 CPU processes (gloo, ``ddp_spawn``) estimate the same patterns as
one process over the same training samples (the streamed sums are all-reduced across ranks)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.attribution.propagation import estimate_patterns
from lightning_xai.callbacks import PatternEstimator
from tests.helpers.training import trainer_kwargs

NUM_SAMPLES, BATCH = 32, 4  # divisible by 2 ranks x batch: both ranks together see every sample once


def _data() -> TensorDataset:
    gen = torch.Generator().manual_seed(7)
    return TensorDataset(
        torch.randn(NUM_SAMPLES, 1, 8, 8, generator=gen), torch.randint(0, 3, (NUM_SAMPLES,), generator=gen)
    )


class FrozenConvNet(pl.LightningModule):
    """A conv and a linear layer trained with ``lr=0``: the weights stay at their seeded initial
    values, so the patterns depend only on which samples were seen, not on how the batches were
    split across ranks (DDP and one process take different optimizer trajectories otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_data(), batch_size=BATCH, shuffle=False)


def _fit(tmp_path: Path, **overrides: object) -> dict[str, dict[str, torch.Tensor]]:
    path = tmp_path / "patterns.pt"
    estimator = PatternEstimator(path=str(path), initial_batches=0)
    kwargs = trainer_kwargs(tmp_path, max_epochs=1, logger=CSVLogger(str(tmp_path)), **overrides)
    pl.Trainer(callbacks=[estimator], **kwargs).fit(FrozenConvNet())
    return torch.load(path, weights_only=True)


def test_ddp_patterns_equal_one_process_over_the_same_samples(tmp_path: Path) -> None:
    ddp = _fit(tmp_path / "ddp", strategy="ddp_spawn", devices=2)
    single = _fit(tmp_path / "single")
    assert sorted(ddp) == sorted(single) == ["net.0", "net.3"]
    for name in single:
        for key in ("a_plus", "a_minus"):
            torch.testing.assert_close(ddp[name][key], single[name][key], rtol=0, atol=1e-5, msg=f"{name} {key}")
    # and both equal the offline estimate over all samples; half of them (one rank's share) would not
    model = FrozenConvNet().eval()
    inputs = _data().tensors[0]
    offline = estimate_patterns(model.net, [inputs])
    rank0_only = estimate_patterns(model.net, [inputs[0::2]])
    for name in single:
        torch.testing.assert_close(
            single[f"{name}"]["a_plus"], offline[name.removeprefix("net.")]["a_plus"], rtol=0, atol=1e-5
        )
        assert (rank0_only[name.removeprefix("net.")]["a_plus"] - ddp[name]["a_plus"]).abs().max() > 1e-3
