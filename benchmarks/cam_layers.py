"""Which layer each CAM method explains by default, per torchvision family (random init, no download).

Prints a markdown table: the structural default (``pooled_layer``: ``<pool>:input`` or the last conv
block's activated output), the module that produces that feature map (``default_cam_layer``, one
hooked forward pass of a 1 x 3 x 64 x 64 input) with its shape, and the old default (the last
``nn.Conv2d``).

Usage (from the repository root)::

    .venv/bin/python benchmarks/cam_layers.py
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torchvision import models  # noqa: E402

from lightning_xai.attribution.base import last_conv_layer_name, observe  # noqa: E402
from lightning_xai.attribution.cam import default_cam_layer, pooled_layer  # noqa: E402

FAMILIES = ["resnet18", "resnet50", "vgg16", "densenet121", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"]


def shape_of(model: torch.nn.Module, spec: str, x: torch.Tensor) -> tuple[int, ...]:
    from lightning_xai.attribution.cam import capture_layer

    with observe(model) as ctx, torch.no_grad():
        capture = capture_layer(ctx, model, spec)
        model(x)
        return tuple(capture.activation.shape[1:])


def main() -> int:
    torch.set_num_threads(1)
    x = torch.rand(1, 3, 64, 64)
    print("| family | default (structural) | module producing it | shape at 64 x 64 | old default (last Conv2d) |")
    print("|---|---|---|---|---|")
    for name in FAMILIES:
        torch.manual_seed(0)
        model = getattr(models, name)(weights=None).eval()
        spec = pooled_layer(model)
        producer = default_cam_layer(model, x)
        print(
            f"| {name} | `{spec}` | `{producer}` | {list(shape_of(model, spec, x))} | `{last_conv_layer_name(model)}` |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
