"""Canonizers: model edits LRP needs, applied for one call and undone after.

* **BatchNorm merging.** An eval-mode BatchNorm after a convolution or linear layer is an affine
  map per channel; LRP treats the pair as one layer with merged parameters
  ``W' = s W``, ``b' = s (b - mean) + beta`` (``s = gamma / sqrt(var + eps)``). Here the merge
  never writes a parameter: the BatchNorm runs as usual and its output is the merged layer's
  value, where the linear layer's rule attaches (a forward hook); the rule reads the merged
  parameters (kept across calls by :mod:`~lightning_xai.attribution.propagation.cache` while the
  parameters and statistics are unchanged). Nothing needs restoring: the model's state is
  bitwise untouched on every exit path. Pairs are found statically:
  consecutive children of an ``nn.Sequential`` and sibling attributes ``convN`` / ``bnN`` (the
  torchvision ResNet stem and blocks), then checked during the forward pass (the BatchNorm must
  read the paired layer's output).
* **Residual additions** need no edit in the signal form the rules use (see
  :mod:`~lightning_xai.attribution.propagation.rules`): the gradient of ``a + b`` splits the
  relevance of the sum in proportion to ``a`` and ``b``, which conserves it exactly. The tracer
  (:class:`~lightning_xai.attribution.propagation.engine.Tracer`) recognises every addition the
  forward pass makes (``+``, ``+=``, ``torch.add``, ``Tensor.add_``, in modules or functional
  code), the way :func:`~lightning_xai.attribution.gradient.modified_relu` finds functional ReLUs,
  and refuses operations no rule covers.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["batchnorm_affine", "batchnorm_pairs", "merged_parameters"]

_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def batchnorm_pairs(model: nn.Module) -> dict[str, str]:
    """``{batchnorm name: name of the conv/linear layer it follows}`` for every BatchNorm that
    can be merged (found statically; see the module docstring).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> batchnorm_pairs(net)
        {'1': '0'}
    """
    pairs: dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        prefix = f"{parent_name}." if parent_name else ""
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            for (name_a, a), (name_b, b) in zip(children, children[1:]):
                if isinstance(a, _LINEAR) and isinstance(b, _BatchNorm):
                    pairs[prefix + name_b] = prefix + name_a
            continue
        by_name = dict(children)
        for name, child in children:
            if not isinstance(child, _BatchNorm):
                continue
            for stem in ("bn", "batchnorm", "norm"):
                if name.startswith(stem):
                    suffix = name[len(stem) :]
                    for head in ("conv", "linear", "fc"):
                        partner = by_name.get(head + suffix)
                        if isinstance(partner, _LINEAR):
                            pairs[prefix + name] = prefix + head + suffix
                            break
                    break
    return pairs


def batchnorm_affine(bn: _BatchNorm) -> tuple[Tensor, Tensor]:
    """``(scale, shift)``: the per-channel affine map ``y = scale * x + shift`` of an eval-mode BatchNorm.

    Examples:
        >>> scale, shift = batchnorm_affine(nn.BatchNorm2d(3).eval())
        >>> scale.shape
        torch.Size([3])
    """
    with torch.no_grad():
        var = bn.running_var if bn.running_var is not None else torch.ones(bn.num_features)
        mean = bn.running_mean if bn.running_mean is not None else torch.zeros(bn.num_features)
        scale = (var + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
    return scale, shift


def merged_parameters(layer: nn.Module, bn: _BatchNorm) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(weight', bias', scale, shift)``: ``layer`` with the eval-mode ``bn`` after it folded in,
    and the per-channel affine map ``y = scale * x + shift`` the BatchNorm applies.

    Examples:
        >>> conv, bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2).eval()
        >>> w, b, s, t = merged_parameters(conv, bn)
        >>> w.shape, b.shape
        (torch.Size([2, 1, 3, 3]), torch.Size([2]))
    """
    scale, shift = batchnorm_affine(bn)
    with torch.no_grad():
        weight: Tensor = layer.weight  # type: ignore[assignment]
        bias = layer.bias
        merged_w = weight * scale.view(-1, *([1] * (weight.ndim - 1)))
        merged_b = shift if bias is None else bias * scale + shift
    return merged_w, merged_b, scale, shift
