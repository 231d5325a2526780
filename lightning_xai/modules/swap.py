"""Put an interpretable head on any classifier backbone: :func:`swap_head`.

A torchvision-style classifier ends in ``features -> pool -> flatten -> classifier``. A head that
reasons over image patches (a prototype layer, say) needs the last *feature map*, not the pooled
vector, so :func:`swap_head` puts it where the pooling was and turns the old classifier into the
identity; a head that takes the classifier's own input (a vector) simply replaces the classifier.

A head says which input it wants with the class attribute ``wants_feature_map`` (``True`` for
:class:`~lightning_xai.modules.PrototypeHead`; missing means ``False``) and, if it checks its input
width, with an ``in_channels`` (feature map) or ``in_features`` (vector) attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Union

import torch
from torch import Tensor, nn

__all__ = ["swap_head", "find_head"]


class _SignSplit(nn.Module):
    """Runs a feature-map head and encodes its logits ``l`` as ``[relu(l), relu(-l)]`` ``[B, 2K, 1, 1]``.

    DenseNet's forward applies ``relu``, a ``(1, 1)`` average pool and a flatten to the output of
    ``features`` with functions (no module to replace). The split survives all three unchanged and
    :class:`_SignMerge` (in place of the classifier) returns ``relu(l) - relu(-l) = l``.
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        logits = self.head(x.relu())  # DenseNet's features end in BatchNorm; its forward applies the ReLU
        return torch.cat([logits.relu(), (-logits).relu()], dim=1)[:, :, None, None]


class _SignMerge(nn.Module):
    """Inverse of :class:`_SignSplit` on ``[B, 2K]``: returns ``x[:, :K] - x[:, K:]``."""

    def forward(self, x: Tensor) -> Tensor:
        k = x.shape[1] // 2
        return x[:, :k] - x[:, k:]


def _last_conv_channels(module: nn.Module) -> Optional[int]:
    """Output channels of the last Conv2d / BatchNorm2d registered in ``module`` (``None`` if none)."""
    channels = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.BatchNorm2d):
            channels = m.num_features
    return channels


_POOL_NAMES = ("avgpool", "pool", "global_pool")


def _plan(model: nn.Module) -> Optional[tuple[str, list[str], Optional[int], Optional[int]]]:
    """Recognise a torchvision-style head on ``model`` itself (not its children).

    Returns ``(kind, [map slot, classifier slot], map channels, classifier in_features)`` or ``None``.
    """
    children = dict(model.named_children())
    fc = children.get("fc")
    pool = next((name for name in _POOL_NAMES if isinstance(children.get(name), nn.Module)), None)
    if isinstance(fc, nn.Linear) and pool is not None:  # ResNet, ResNeXt, Inception, a small CNN
        names = list(children)
        # dropout between the pool and fc acts on pooled features: on the map path it would hit logits
        between = [n for n in names[names.index(pool) + 1 : names.index("fc")] if isinstance(children[n], nn.Dropout)]
        return "resnet", [pool, *between, "fc"], fc.in_features, fc.in_features
    classifier = children.get("classifier")
    features = children.get("features")
    if classifier is None or features is None:
        return None
    if isinstance(classifier, nn.Linear) and "avgpool" not in children:  # DenseNet
        return "densenet", ["features", "classifier"], classifier.in_features, classifier.in_features
    if "avgpool" in children:  # VGG, AlexNet
        first = next((m for m in classifier.modules() if isinstance(m, nn.Linear)), None)
        return "vgg", ["avgpool", "classifier"], _last_conv_channels(features), getattr(first, "in_features", None)
    return None


def find_head(model: nn.Module) -> tuple[str, list[str]]:
    """Find the torchvision-style classifier head in ``model`` or in one of its submodules.

    Returns the dotted name of the backbone that holds the head (``""`` for ``model`` itself) and
    the names of the slots :func:`swap_head` replaces (pooling slot first, then the classifier).
    The shallowest match wins, so this finds the backbone inside a LightningModule.

    Raises:
        ValueError: no recognisable head, or several at the same depth.

    Examples:
        >>> from torchvision.models import resnet18
        >>> find_head(resnet18(weights=None))
        ('', ['avgpool', 'fc'])
    """
    found: list[tuple[int, str, list[str]]] = []
    for name, module in model.named_modules():
        plan = _plan(module)
        if plan is not None:
            found.append((name.count(".") + (1 if name else 0), name, plan[1]))
    if not found:
        raise ValueError(
            f"swap_head found no recognisable classifier head in {type(model).__name__} (expected a ResNet-style "
            "`avgpool` + `fc`, a VGG/AlexNet-style `features` + `avgpool` + `classifier`, or a DenseNet-style "
            "`features` + `classifier`); name the module(s) to replace with `at=`."
        )
    depth = min(d for d, _, _ in found)
    best = [(n, s) for d, n, s in found if d == depth]
    if len(best) > 1:
        raise ValueError(
            f"swap_head found several classifier heads at the same depth ({[n for n, _ in best]}); "
            "name the one to replace with `at=`."
        )
    return best[0]


def _check_width(
    head: nn.Module, wants_map: bool, channels: Optional[int], features: Optional[int], where: str
) -> None:
    if wants_map:
        expected, attr = channels, "in_channels"
    else:
        expected, attr = features, "in_features"
    got = getattr(head, attr, None)
    if expected is not None and isinstance(got, int) and got != expected:
        raise ValueError(
            f"The head {type(head).__name__} has {attr}={got}, but the backbone gives it {expected} "
            f"{'channels' if wants_map else 'features'} at {where!r}."
        )


def swap_head(model: nn.Module, head: nn.Module, at: Union[str, Sequence[str], None] = None) -> nn.Module:
    """Replace the classifier head of ``model`` (in place) by ``head``; returns ``model``.

    Without ``at``, the head is found (also inside a wrapper such as a LightningModule, see
    :func:`find_head`) and wired by architecture:

    * ResNet-style (``avgpool``, ``pool`` or ``global_pool`` + ``fc``): a feature-map head takes
      the pool's place and ``fc`` (and any ``nn.Dropout`` registered between the two) becomes
      ``nn.Identity``; a vector head replaces ``fc``.
    * VGG / AlexNet (``features`` + ``avgpool`` + ``classifier``): a feature-map head takes
      ``avgpool``'s place and receives the output of ``features``; ``classifier`` becomes the
      identity. A vector head replaces ``classifier`` (and receives the flattened pooled map).
    * DenseNet (``features`` + ``classifier``, pooling done functionally in ``forward``): a
      feature-map head is appended to ``features`` behind an exact sign-split encoding that survives
      DenseNet's functional ReLU, pool and flatten; ``classifier`` decodes it. A vector head
      replaces ``classifier``.

    With ``at`` a dotted module name, that module is replaced by ``head``; with a sequence of
    names, the first is replaced by ``head`` and the others by ``nn.Identity`` (e.g.
    ``at=["pool", "dropout", "fc"]`` puts a feature-map head where a global pool was). The forward
    code between the slots must pass a ``[B, K]`` tensor through unchanged (a flatten does).

    The head's input width is checked where the backbone makes it known: ``head.in_channels``
    against the feature map's channels, ``head.in_features`` against the classifier's input.

    Args:
        model: the network (or a module holding it, such as a LightningModule).
        head: the new head; a class attribute ``wants_feature_map = True`` asks for the last feature map.
        at: module name(s) to replace instead of the recognised head.

    Returns:
        ``model``, changed in place.

    Raises:
        TypeError: ``model`` or ``head`` is not an ``nn.Module``, or ``at`` is not a name or names.
        ValueError: no recognisable head and no ``at``, an unknown name in ``at``, or a head whose
            input width does not match the backbone.

    Examples:
        >>> from torchvision.models import resnet18
        >>> from lightning_xai.modules import PrototypeHead
        >>> net = swap_head(resnet18(weights=None), PrototypeHead(512, num_classes=3, prototypes_per_class=2))
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 3])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"Expected `model` to be an nn.Module, but got {type(model).__name__}.")
    if not isinstance(head, nn.Module):
        raise TypeError(f"Expected `head` to be an nn.Module, but got {type(head).__name__}.")
    wants_map = bool(getattr(head, "wants_feature_map", False))

    if at is not None:
        names = [at] if isinstance(at, str) else list(at) if isinstance(at, Sequence) else None
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError(f"Expected `at` to be a module name or a non-empty sequence of names, but got {at!r}.")
        known = dict(model.named_modules())
        for name in names:
            if name not in known or name == "":
                raise ValueError(f"`at` names {name!r}, which is not a submodule of {type(model).__name__}.")
        if wants_map:
            # the channels come from the last conv registered before the first slot
            channels = None
            for name, m in model.named_modules():
                if name == names[0]:
                    break
                if isinstance(m, nn.Conv2d):
                    channels = m.out_channels
                elif isinstance(m, nn.BatchNorm2d):
                    channels = m.num_features
            _check_width(head, True, channels, None, names[0])
        else:
            target = known[names[0]]
            _check_width(head, False, None, getattr(target, "in_features", None), names[0])
        for i, name in enumerate(names):
            model.set_submodule(name, head if i == 0 else nn.Identity())
        return model

    prefix, _ = find_head(model)
    backbone = model.get_submodule(prefix) if prefix else model
    plan = _plan(backbone)
    assert plan is not None
    kind, slots, channels, in_features = plan
    map_slot, cls_slot = slots[0], slots[-1]
    where = f"{prefix}.{cls_slot}" if prefix else cls_slot
    _check_width(head, wants_map, channels, in_features, where)
    if not wants_map:
        backbone.set_submodule(cls_slot, head)
    elif kind == "densenet":
        features = backbone.get_submodule("features")
        features.add_module("head", _SignSplit(head))
        backbone.set_submodule(cls_slot, _SignMerge())
    else:
        backbone.set_submodule(map_slot, head)
        for slot in slots[1:]:
            backbone.set_submodule(slot, nn.Identity())
    return model
