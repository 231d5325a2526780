"""The CAM family's default layer: the feature map the global pool consumes.

Found structurally (:func:`global_pool_name`, :func:`activated_last_conv`, :func:`pooled_layer`) or
with one hooked forward pass (:func:`default_cam_layer`). ``layer="last_conv"`` (:data:`LAST_CONV`)
keeps the last ``nn.Conv2d``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    OutputType,
    last_conv_layer_name,
    observe,
)
from lightning_xai.attribution.capture import INPUT_SUFFIX

__all__ = [
    "LAST_CONV",
    "activated_last_conv",
    "default_cam_layer",
    "global_pool_name",
    "is_global_pool",
    "pooled_layer",
]

LAST_CONV = "last_conv"
"""``layer=LAST_CONV`` explains the last ``nn.Conv2d`` (in ``named_modules`` order): the CAM
family's default before it moved to the feature map the global pool consumes."""

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Mish,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.PReLU,
    nn.Hardtanh,
)
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n]


def is_global_pool(module: nn.Module) -> bool:
    return isinstance(module, _GLOBAL_POOLS) and _is_global(module.output_size)


def global_pool_name(model: nn.Module) -> str | None:
    """The last global pooling module (``nn.AdaptiveAvgPool2d(1)``, or max) registered after the
    last ``nn.Conv2d``: the pool in front of the head. ``None`` when there is none (a functional
    pool such as densenet's ``F.adaptive_avg_pool2d``, or a non-global pool such as VGG's 7 x 7);
    squeeze-and-excitation pools inside the blocks come before the last conv and are skipped.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> global_pool_name(model)
        '2'
    """
    modules = _modules(model)
    last_conv = max((i for i, (_, m) in enumerate(modules) if isinstance(m, nn.Conv2d)), default=-1)
    pools = [n for i, (n, m) in enumerate(modules) if i > last_conv and is_global_pool(m)]
    return pools[-1] if pools else None


def activated_last_conv(model: nn.Module, *, method: str = "explainer") -> str:
    """The last conv block's activated output: the first activation module (ReLU, SiLU, GELU,
    Hardswish, ...) registered after the last ``nn.Conv2d`` and before any ``nn.Linear``,
    ``nn.Flatten`` or pooling; without one, the top-level child of ``model`` that holds the last
    ``nn.Conv2d`` (the conv itself when it is a direct child).

    Raises:
        ValueError: the model has no ``nn.Conv2d``.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2))
        >>> activated_last_conv(model)
        '1'
    """
    conv = last_conv_layer_name(model, method=method)
    modules = _modules(model)
    index = [n for n, _ in modules].index(conv)
    for name, module in modules[index + 1 :]:
        if name.startswith(conv + "."):
            continue
        if isinstance(module, (nn.Linear, nn.Flatten, nn.modules.pooling._AdaptiveAvgPoolNd)) or is_global_pool(module):
            break
        if isinstance(module, _ACTIVATIONS):
            return name
    return conv.split(".")[0]


def pooled_layer(model: nn.Module, *, method: str = "explainer") -> str:
    """The CAM family's default layer, found structurally: ``"<pool>:input"`` (the feature map
    the global pool consumes, :func:`global_pool_name`), else :func:`activated_last_conv`.

    Raises:
        ValueError: no global pool and no ``nn.Conv2d``.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> pooled_layer(model)
        '2:input'
    """
    pool = global_pool_name(model)
    if pool is not None:
        return pool + INPUT_SUFFIX
    return activated_last_conv(model, method=method)


def default_cam_layer(model: nn.Module, inputs: Tensor, *, output: OutputType = None, method: str = "explainer") -> str:
    """The name of the module whose output is the CAM family's default feature map.

    One hooked forward pass of ``inputs`` (under :func:`~lightning_xai.attribution.base.observe`,
    no gradients) finds the module that produced the tensor the global pool consumes: the last
    module to return that very tensor, unmodified since (``layer4`` on a torchvision ResNet,
    ``features`` on EfficientNet); a module called several times per forward pass does not count.
    Falls back to the structural :func:`pooled_layer` spec when no
    module produced it (a functional operation in between) and to :func:`activated_last_conv`
    without a global pool.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> default_cam_layer(model, torch.rand(1, 3, 8, 8))
        '1'
    """
    spec = pooled_layer(model, method=method)
    if not spec.endswith(INPUT_SUFFIX):
        return spec
    pool = model.get_submodule(spec[: -len(INPUT_SUFFIX)])
    produced: list[tuple[str, Tensor, int]] = []
    consumed: list[tuple[Tensor, int]] = []

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            if isinstance(out, Tensor):
                produced.append((name, out, out._version))

        return hook

    def record_input(module: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], Tensor):
            consumed.append((args[0], args[0]._version))

    with observe(model, output=output) as ctx:
        for name, module in _modules(model):
            if module is not pool:
                ctx.add_hook(module.register_forward_hook(recorder(name)))
        ctx.add_hook(pool.register_forward_pre_hook(record_input))
        with torch.no_grad():
            model(ctx.prepare(inputs).detach())
    if len(consumed) != 1:
        return spec
    tensor, version = consumed[0]
    calls: dict[str, int] = {}
    for name, _, _ in produced:
        calls[name] = calls.get(name, 0) + 1
    for name, out, out_version in reversed(produced):
        if out is tensor and out_version == version and calls[name] == 1:  # a reused module is no answer
            return name
    return spec


def _is_global(output_size: Any) -> bool:
    sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    return all(s == 1 for s in sizes)
