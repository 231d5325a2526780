"""Cost of the ProtoPNet head (not a timed test).

1. Forward+backward time of :class:`~lightning_xai.modules.PrototypeHead` against the backbone's own
   head (global average pool + linear) on the same feature maps, alone and with the backbone, on
   two workloads:

   * ``shapes``: the example's CNN on 64 x 3 x 32 x 32 inputs (an 8 x 8 x 64 map), 4 classes x 5
     prototypes of dim 32 (``examples/prototypes_shapes.py``);
   * ``cub``: the paper's CUB-200 head size, 2,000 prototypes (200 classes x 10) of dim 128 on a
     resnet-style 7 x 7 x 512 map, batch 16 (head only: the backbone is not the point here).

2. The push's cost in training epochs on the example's data (2,048 images of 32 x 32): one push
   (stream the training set in eval mode, keep the nearest own-class patch per prototype, copy
   them in) against one training epoch of the prototype network (forward, loss terms, backward,
   Adam step, batch 64).

Medians over ``--repeats`` rounds after a warm-up, one thread, CPU.

    python benchmarks/bench_prototypes.py [--repeats 20] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.data import ShapesDataset
from lightning_xai.modules import NearestPatches, PrototypeHead, prototype_parameter_groups, swap_head


def _example_backbone() -> type[nn.Module]:
    path = Path(__file__).resolve().parents[1] / "examples" / "prototypes_shapes.py"
    spec = importlib.util.spec_from_file_location("prototypes_shapes", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.Backbone


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fwd_bwd(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step


def head_rows(repeats: int) -> list[dict[str, object]]:
    rows = []
    torch.manual_seed(0)
    # shapes workload: head alone and the whole network
    backbone_cls = _example_backbone()
    x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 4, (64,))
    linear_net = backbone_cls(4)
    proto_net = backbone_cls(4)
    proto_net.load_state_dict(linear_net.state_dict())
    swap_head(proto_net, PrototypeHead(64, 4, prototypes_per_class=5, prototype_dim=32))
    with torch.no_grad():
        fmap = linear_net.features(x)
    linear_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4))
    proto_head = PrototypeHead(64, 4, prototypes_per_class=5, prototype_dim=32)
    f = fmap.clone().requires_grad_(True)
    for name, a, b, xa, xb in [
        ("shapes: head only (8x8x64 map, 20 prototypes)", linear_head, proto_head, f, f),
        ("shapes: whole network (64 x 3x32x32)", linear_net, proto_net, x, x),
    ]:
        ta = median_time(fwd_bwd(a, xa, y), repeats)
        tb = median_time(fwd_bwd(b, xb, y), repeats)
        rows.append({"workload": name, "linear_ms": 1e3 * ta, "prototype_ms": 1e3 * tb, "ratio": tb / ta})
    # CUB-size head
    f = torch.rand(16, 512, 7, 7, requires_grad=True)
    y = torch.randint(0, 200, (16,))
    linear_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 200))
    proto_head = PrototypeHead(512, 200, prototypes_per_class=10, prototype_dim=128)
    ta = median_time(fwd_bwd(linear_head, f, y), repeats)
    tb = median_time(fwd_bwd(proto_head, f, y), max(3, repeats // 4))
    rows.append(
        {
            "workload": "cub: head only (7x7x512 map, 2000 prototypes, batch 16)",
            "linear_ms": 1e3 * ta,
            "prototype_ms": 1e3 * tb,
            "ratio": tb / ta,
        }
    )
    return rows


def push_row(repeats: int) -> dict[str, object]:
    torch.manual_seed(0)
    data = ShapesDataset(2048, 32, 4, seed=0)
    net = _example_backbone()(4)
    head = PrototypeHead(64, 4, prototypes_per_class=5, prototype_dim=32)
    swap_head(net, head)
    optimizer = torch.optim.Adam(prototype_parameter_groups(net))
    generator = torch.Generator().manual_seed(0)

    def epoch() -> None:
        net.train()
        order = torch.randperm(len(data), generator=generator)
        for i in range(0, len(data), 64):
            idx = order[i : i + 64]
            optimizer.zero_grad(set_to_none=True)
            logits = net(data.images[idx])
            head.loss_terms(logits, data.labels[idx])["loss"].backward()
            optimizer.step()

    def push() -> None:
        net.eval()
        nearest = NearestPatches.empty(head)
        with torch.no_grad():
            for i in range(0, len(data), 64):
                end = min(i + 64, len(data))
                features = net.features(data.images[i:end])
                nearest.update(head, features, data.labels[i:end], torch.arange(i, end))
        head.push(nearest, (32, 32))

    rounds = max(3, repeats // 5)
    t_epoch = median_time(epoch, rounds, warmup=1)
    t_push = median_time(push, rounds, warmup=1)
    return {"epoch_s": t_epoch, "push_s": t_push, "push_in_epochs": t_push / t_epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = head_rows(args.repeats)
    print(f"{'forward+backward':58s} {'linear ms':>10s} {'prototype ms':>13s} {'ratio':>7s}")
    for row in rows:
        print(f"{row['workload']:58s} {row['linear_ms']:10.3f} {row['prototype_ms']:13.3f} {row['ratio']:7.2f}")
    push = push_row(args.repeats)
    print(
        f"\npush over 2,048 training images: {push['push_s']:.2f} s; one training epoch: {push['epoch_s']:.2f} s; "
        f"push = {push['push_in_epochs']:.2f} epochs"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"heads": rows, "push": push, "threads": args.threads}, indent=2))


if __name__ == "__main__":
    main()
