"""Training-time overhead of ``TracInStepsMonitor`` (TracIn at the training steps), as ratios.

Two workloads, random data (no downloads), SGD, each trained with and without the monitor,
alternating, ``--repeats`` pairs; the time is from ``on_train_start`` to ``on_train_end`` (the
training steps and the monitor's epoch-end logging; Lightning's setup is left out):

1. **demo CNN** (``lightning_xai.demo.ShapesClassifier``, width 16: conv/BN/ReLU blocks + linear),
   48x48 RGB images, batch 64.
2. **resnet18** (torchvision, random init, 10 classes) at 64x64, batch 32.

Prints the median times and their ratio (overhead = ratio - 1). Threads: ``--threads`` (default 1,
stated in the output).

    python benchmarks/bench_tracin_steps.py [--repeats 3] [--steps 20] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_xai.callbacks.tracin_steps import TracInStepsMonitor


class Classifier(pl.LightningModule):
    def __init__(self, net: nn.Module, data: TensorDataset, batch_size: int) -> None:
        super().__init__()
        self.net, self.data, self.batch_size = net, data, batch_size

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=True)


class Timer(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def _workload(name: str, steps: int) -> tuple[nn.Module, TensorDataset, int]:
    gen = torch.Generator().manual_seed(0)
    if name == "demo_cnn":
        from lightning_xai.demo import ShapesClassifier

        net, size, batch = ShapesClassifier(num_classes=4, width=16, dropout=0.0), 48, 64
        classes = 4
    else:
        from torchvision.models import resnet18

        net, size, batch, classes = resnet18(num_classes=10), 64, 32, 10
    n = steps * batch
    x = torch.randn(n, 3, size, size, generator=gen)
    return net, TensorDataset(x, torch.randint(0, classes, (n,), generator=gen)), batch


def _fit(name: str, steps: int, monitor: bool, device: str, layers: object = "last_linear") -> float:
    torch.manual_seed(0)
    net, data, batch = _workload(name, steps)
    timer = Timer()
    callbacks: list[pl.Callback] = [timer]
    if monitor:
        callbacks.insert(0, TracInStepsMonitor(num_samples=4, gradient_layers=layers))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = pl.Trainer(
            accelerator=device,
            devices=1,
            max_epochs=1,
            logger=CSVLogger(tmp),
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
        )
        trainer.fit(Classifier(net, data, batch))
    return timer.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workloads", nargs="*", default=["demo_cnn", "resnet18_64"])
    parser.add_argument(
        "--layers", nargs="*", default=["last_linear", "all"], help="gradient_layers settings to measure ('all': None)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={args.threads} steps={args.steps} repeats={args.repeats}")
    for name in args.workloads:
        _fit(name, 2, True, args.device)  # warm-up (imports, allocator)
        for spec in args.layers:
            layers = None if spec == "all" else spec
            base, with_monitor = [], []
            for _ in range(args.repeats):  # interleaved: the pair shares the machine's state
                base.append(_fit(name, args.steps, False, args.device))
                with_monitor.append(_fit(name, args.steps, True, args.device, layers))
            b, m = statistics.median(base), statistics.median(with_monitor)
            print(
                f"{name:12s} gradient_layers={spec:12s} without {b:7.2f}s  with {m:7.2f}s  "
                f"ratio {m / b:.3f} (overhead {100 * (m / b - 1):+.1f}%)"
            )


if __name__ == "__main__":
    main()
