"""Network Dissection (Bau et al. 2017): which units of a layer detect which concepts.

For every unit ``k`` of a convolutional layer, the threshold ``T_k`` is the top ``quantile`` of the
unit's activations over every spatial position of every image (``P(a_k >= T_k) = quantile``,
ties aside: all values equal to ``T_k`` count as active, so a unit that outputs exactly 1 on a
concept and 0 elsewhere selects the concept). A unit whose threshold equals its smallest
activation (a dead ReLU unit, constant over the data) has no top quantile and is never active. Each activation map is upsampled (bilinearly) to the masks' resolution and
thresholded, ``M_k = a_k^up >= T_k``, and compared with every concept's masks ``L_c`` by
``IoU_{k,c} = sum |M_k & L_c| / sum |M_k | L_c|``, summed over the whole dataset before dividing.
A unit is a detector of its best concept when that IoU exceeds ``iou_threshold``.

**The quantile is exact and streamed.** The top ``quantile`` of ``N * h * w`` values is the
smallest of the top ``m = ceil(quantile * N * h * w)`` values, so a buffer of the ``m`` largest
values per unit, merged batch by batch (``topk`` of the buffer and the new batch), gives the exact
threshold without holding all activations: memory ``K * m`` (``K * N * h * w * quantile``, 0.5% of
the full activations at the paper's ``quantile=0.005``). Buffers of several processes merge the
same way (:func:`merge_top_values`), so a sharded run gives the single-process threshold.

Cost: two forward passes over the images (one for the thresholds, one for the IoUs). Memory:
the images stay where they are (a batch at a time on the model's device), the masks may be one
per image (:class:`OwnedMasks`), and the pixel counts are integer sums over chunks of units.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import chunks, get_layer, observe
from lightning_xai.attribution.capture import LayerCapture
from lightning_xai.concepts.examples import _inputs_of
from lightning_xai.errors import LightningXAIError

__all__ = [
    "NetworkDissection",
    "DissectionResult",
    "OwnedMasks",
    "merge_top",
    "merge_top_values",
    "as_concept_masks",
]


@dataclass(eq=False)
class DissectionResult:
    """Per-unit concept IoUs of one layer.

    Attributes:
        layer: Dotted name of the layer.
        concepts: Concept names, in column order.
        thresholds: ``[K]`` per-unit activation thresholds.
        iou: ``[K, C]`` IoU of each unit with each concept.
        iou_threshold: The IoU above which a unit counts as a detector.

    Examples:
        >>> result = DissectionResult("conv", ["a", "b"], torch.zeros(3), torch.tensor([[0.5, 0.1], [0.0, 0.02], [0.1, 0.3]]), 0.04)
        >>> result.best_concept.tolist(), result.num_interpretable, result.detectors()
        ([0, 1, 1], 2, {'a': 1, 'b': 1})
    """

    layer: str
    concepts: list[str]
    thresholds: Tensor
    iou: Tensor
    iou_threshold: float

    @property
    def best_iou(self) -> Tensor:
        """``[K]`` each unit's highest IoU."""
        return self.iou.max(dim=1).values

    @property
    def best_concept(self) -> Tensor:
        """``[K]`` index into :attr:`concepts` of each unit's best concept."""
        return self.iou.argmax(dim=1)

    @property
    def interpretable(self) -> Tensor:
        """``[K]`` bool: the unit's best IoU exceeds :attr:`iou_threshold`."""
        return self.best_iou > self.iou_threshold

    @property
    def num_interpretable(self) -> int:
        """The number of units that detect some concept."""
        return int(self.interpretable.sum())

    def detectors(self) -> dict[str, int]:
        """``{concept: number of units whose best concept it is, above the IoU threshold}``."""
        best, ok = self.best_concept, self.interpretable
        return {name: int(((best == i) & ok).sum()) for i, name in enumerate(self.concepts)}

    def units(self, concept: str) -> list[int]:
        """The detector units of ``concept``, best IoU first."""
        if concept not in self.concepts:
            raise ValueError(f"Unknown concept {concept!r}; the dissection knows {self.concepts}.")
        i = self.concepts.index(concept)
        idx = torch.nonzero((self.best_concept == i) & self.interpretable).flatten()
        return idx[self.iou[idx, i].argsort(descending=True)].tolist()


def merge_top_values(buffers: Sequence[Tensor], keep: int) -> Tensor:
    """Merge ``[K, m_i]`` buffers of largest values into the ``[K, keep]`` largest, descending."""
    values = torch.cat(list(buffers), dim=1)
    return values.topk(min(keep, values.shape[1]), dim=1).values


def merge_top(tops: Sequence[Tensor], keep: int) -> Tensor:
    """Merge :meth:`NetworkDissection.top_values` outputs of several shards (``[K, m + 1]`` each)."""
    values = merge_top_values([t[:, :-1] for t in tops], keep)
    minimum = torch.stack([t[:, -1] for t in tops]).min(dim=0).values
    return torch.cat([values, minimum.unsqueeze(1)], dim=1)


def as_concept_masks(
    masks: Mapping[str, Tensor] | Tensor, names: Sequence[str] | None = None
) -> tuple[Tensor, list[str]]:
    """Concept masks as one ``[N, C, H, W]`` bool tensor and the concept names.

    Args:
        masks: ``{name: [N, H, W] or [N, 1, H, W]}``, or a ``[N, C, H, W]`` tensor with ``names``.
        names: Concept names for a tensor (default ``"0"``, ``"1"``, ...).

    Raises:
        ValueError: masks disagree in shape, or ``names`` does not match.
    """
    if isinstance(masks, Mapping):
        if not masks:
            raise ValueError("NetworkDissection: expected at least one concept mask, but got an empty mapping.")
        tensors = []
        for name, mask in masks.items():
            mask = torch.as_tensor(mask)
            if mask.ndim == 4 and mask.shape[1] == 1:
                mask = mask[:, 0]
            if mask.ndim != 3:
                raise ValueError(
                    f"NetworkDissection: expected the masks of {name!r} as [N, H, W], but got {tuple(mask.shape)}."
                )
            tensors.append(mask)
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(f"NetworkDissection: the concept masks have different shapes {sorted(shapes)}.")
        return torch.stack(tensors, dim=1) != 0, [str(n) for n in masks]
    if not isinstance(masks, Tensor) or masks.ndim != 4:
        raise ValueError(
            "NetworkDissection: expected masks as {name: [N, H, W]} or a [N, C, H, W] tensor, but got "
            f"{tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__}."
        )
    names = [str(i) for i in range(masks.shape[1])] if names is None else list(names)
    if len(names) != masks.shape[1]:
        raise ValueError(f"NetworkDissection: {len(names)} names for {masks.shape[1]} mask channels.")
    return masks != 0, names


COUNT_CHUNK_BYTES = 64 * 2**20
"""Upsampled float maps held at once by :meth:`NetworkDissection.counts` (units are chunked to fit)."""


@dataclass(eq=False)
class OwnedMasks:
    """Concept masks of a Broden-style probe set in which every image belongs to one concept set:
    ``masks[i]`` is image ``i``'s mask for concept ``owner[i]``, and the image is background for
    every other concept. ``C`` times smaller than the dense ``[N, C, H, W]`` form.

    Attributes:
        masks: ``[N, H, W]`` bool.
        owner: ``[N]`` concept index of each image.
        num_concepts: ``C``.
    """

    masks: Tensor
    owner: Tensor
    num_concepts: int

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def dense(self) -> Tensor:
        """The ``[N, C, H, W]`` bool form (for small sets and tests)."""
        out = torch.zeros(self.masks.shape[0], self.num_concepts, *self.masks.shape[1:], dtype=torch.bool)
        out[torch.arange(self.masks.shape[0]), self.owner] = self.masks.cpu()
        return out


def _mask_size(masks: Tensor | OwnedMasks) -> tuple[int, int]:
    shape = masks.masks.shape if isinstance(masks, OwnedMasks) else masks.shape
    return int(shape[-2]), int(shape[-1])


def _concept_groups(
    masks: Tensor | OwnedMasks, rows: Tensor, device: torch.device
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """``(concept, positions in the batch, [b_c, H, W] bool masks)`` for every concept with an
    image in the batch ``rows`` (dense masks: every concept with a nonzero mask there)."""
    if isinstance(masks, OwnedMasks):
        owner = masks.owner[rows.to(masks.owner.device)].cpu()
        for c in torch.unique(owner).tolist():
            sel = (owner == c).nonzero().flatten()
            yield int(c), sel.to(device), masks.masks[rows[sel].to(masks.masks.device)].to(device)
        return
    batch = masks[rows.to(masks.device)]
    present = batch.flatten(2).any(2).any(0).nonzero().flatten().tolist()
    everyone = torch.arange(rows.numel(), device=device)
    for c in present:
        yield int(c), everyone, batch[:, c].to(device)


class NetworkDissection:
    """Network Dissection of one convolutional layer (Bau et al. 2017).

    Holds configuration only; called as ``dissect(model, images, masks)``.

    Args:
        layer: Dotted name of a layer returning ``[B, K, h, w]`` maps.
        quantile: Fraction of each unit's activations above its threshold (paper: 0.005).
        iou_threshold: IoU above which a unit counts as a concept detector (paper: 0.04).
        batch_size: Images per forward pass.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.ReLU())
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)), model[0].bias.zero_()
        >>> images = (torch.rand(4, 1, 8, 8) > 0.5).float()
        >>> result = NetworkDissection("1", quantile=0.1)(model, images, {"bright": images[:, 0]})
        >>> round(float(result.iou[0, 0]), 2), result.num_interpretable
        (1.0, 1)
    """

    def __init__(
        self, layer: str, quantile: float = 0.005, iou_threshold: float = 0.04, *, batch_size: int = 64
    ) -> None:
        if not isinstance(layer, str) or not layer:
            raise TypeError(f"Expected argument `layer` to be a dotted module name, but got {layer!r}.")
        self.layer = layer
        self.quantile = check_float("quantile", quantile, 0.0, 1.0)
        if self.quantile == 0.0:
            raise ValueError("Expected argument `quantile` to be a finite float in (0, 1], but got 0.0.")
        self.iou_threshold = check_float("iou_threshold", iou_threshold, 0.0, 1.0)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def check(self, model: nn.Module) -> None:
        """Check that the layer exists.

        Raises:
            ValueError: unknown layer (the message lists the valid names).
        """
        get_layer(model, self.layer, method="NetworkDissection")

    # -- streaming ----------------------------------------------------------------------------
    def _maps(
        self, model: nn.Module, images: Tensor | Dataset, indices: Tensor | None = None
    ) -> Iterator[tuple[slice, Tensor]]:
        """``(positions, [b, K, h, w] activations)`` batch by batch over ``images`` (or its rows
        ``indices``), inside ``observe`` without gradients."""
        n = len(images) if indices is None else int(indices.numel())  # type: ignore[arg-type]
        with observe(model) as ctx:
            capture = LayerCapture(self.layer, "NetworkDissection")
            capture._handle = ctx.add_hook(
                get_layer(model, self.layer, method="NetworkDissection").register_forward_hook(capture)
            )
            with torch.no_grad():
                for part in chunks(n, self.batch_size):
                    rows = torch.arange(part.start, part.stop) if indices is None else indices[part].cpu()
                    if isinstance(images, Tensor):
                        x = images[rows.to(images.device)]
                    else:
                        x = torch.stack([_inputs_of(images[int(i)], f"item {int(i)}") for i in rows]).float()
                    x = x.to(device=ctx.device, dtype=ctx.dtype if ctx.dtype is not None else x.dtype)
                    try:
                        model(x)
                    except RuntimeError as err:
                        raise ValueError(
                            f"NetworkDissection: the model cannot run on images of shape {list(x.shape)}: {err}"
                        ) from err
                    act = capture.activation
                    capture.outputs.clear()
                    if act.ndim != 4:
                        raise LightningXAIError(
                            f"NetworkDissection: layer {self.layer!r} returned shape {tuple(act.shape)}; dissection needs "
                            "[B, K, h, w] feature maps."
                        )
                    yield part, act.float()

    def keep_count(self, num_images: int, map_size: tuple[int, int]) -> int:
        """``m = ceil(quantile * N * h * w)``: how many top values per unit decide the threshold."""
        return max(1, math.ceil(self.quantile * num_images * map_size[0] * map_size[1] - 1e-9))

    def top_values(
        self,
        model: nn.Module,
        images: Tensor | Dataset,
        *,
        total_images: int | None = None,
        indices: Tensor | None = None,
    ) -> Tensor:
        """Per unit, the largest ``keep_count(total_images, (h, w))`` activations over ``images``.

        Args:
            model: The model.
            images: ``[N, ...]`` images or a map-style ``Dataset`` of them.
            total_images: The number of images the quantile is over (all processes together;
                default: those given here).
            indices: Only these rows of ``images`` (this process's shard).

        Returns:
            ``[K, m + 1]``: the ``m`` largest values per unit, descending, then the unit's minimum
            (merge shards with :func:`merge_top_values` on ``[:, :-1]`` and a minimum on ``[:, -1]``).
        """
        n = len(images) if indices is None else int(indices.numel())  # type: ignore[arg-type]
        buffer: Tensor | None = None
        minimum: Tensor | None = None
        keep = 0
        for _, act in self._maps(model, images, indices):
            values = act.transpose(0, 1).reshape(act.shape[1], -1)
            if buffer is None or minimum is None:
                keep = self.keep_count(total_images or n, (act.shape[2], act.shape[3]))
                buffer, minimum = merge_top_values([values], keep), values.min(dim=1).values
            else:
                buffer = merge_top_values([buffer, values], keep)
                minimum = torch.minimum(minimum, values.min(dim=1).values)
        if buffer is None or minimum is None:
            raise ValueError("NetworkDissection: expected at least one image, but got none.")
        return torch.cat([buffer, minimum.unsqueeze(1)], dim=1)

    @staticmethod
    def threshold_from_top(top: Tensor) -> Tensor:
        """``[K]`` thresholds from :meth:`top_values`'s ``[K, m + 1]`` (top values, then the
        minimum): the smallest top value, or ``inf`` where it equals the unit's minimum."""
        threshold, minimum = top[:, -2], top[:, -1]
        return torch.where(threshold > minimum, threshold, torch.full_like(threshold, math.inf))

    def thresholds(self, model: nn.Module, images: Tensor | Dataset) -> Tensor:
        """``[K]`` per-unit thresholds: the top ``quantile`` of each unit's activations (exact;
        ``inf`` for a unit that is constant over the data)."""
        return self.threshold_from_top(self.top_values(model, images))

    def counts(
        self,
        model: nn.Module,
        images: Tensor | Dataset,
        masks: Tensor | OwnedMasks,
        thresholds: Tensor,
        *,
        indices: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Pixel counts for the IoUs: ``(intersection [K, C], |M_k| [K], |L_c| [C])`` summed over
        images (sums over processes add up), as float32 tensors holding exact integer counts.

        Batch by batch, units in chunks (at most :data:`COUNT_CHUNK_BYTES` of upsampled maps at
        once): each chunk's maps are upsampled, thresholded into a bool mask and intersected with
        the masks of the concepts present in the batch by an integer count; no float
        ``[b, K, H * W]`` temporary is formed. Images stay where they are and move to the model's
        device a batch at a time.

        Args:
            model: The model.
            images: ``[N, ...]`` images or a ``Dataset``.
            masks: ``[N, C, H, W]`` bool concept masks aligned with ``images``, or
                :class:`OwnedMasks` (one mask per image, for the concept that owns it).
            thresholds: ``[K]`` from :meth:`thresholds`.
            indices: Only these rows (a shard).
        """
        inter = unit_area = concept_area = None
        for part, act in self._maps(model, images, indices):
            rows = torch.arange(part.start, part.stop) if indices is None else indices[part].cpu()
            groups = list(_concept_groups(masks, rows, act.device))
            b, k = act.shape[:2]
            size = groups[0][2].shape[-2:] if groups else _mask_size(masks)
            if inter is None:
                num_concepts = masks.num_concepts if isinstance(masks, OwnedMasks) else masks.shape[1]
                inter = torch.zeros(k, num_concepts, dtype=torch.long, device=act.device)
                unit_area = torch.zeros(k, dtype=torch.long, device=act.device)
                concept_area = torch.zeros(num_concepts, dtype=torch.long, device=act.device)
            pixels = size[0] * size[1]
            step = max(1, COUNT_CHUNK_BYTES // max(1, 4 * b * pixels))
            for start in range(0, k, step):
                units = slice(start, min(k, start + step))
                up = F.interpolate(act[:, units], size=size, mode="bilinear", align_corners=False)
                active = up >= thresholds[units].to(act.device).view(1, -1, 1, 1)  # [b, kc, H, W] bool
                del up
                unit_area[units] += active.sum((0, 2, 3))
                for c, sel, mask in groups:
                    inter[units, c] += (active[sel] & mask.unsqueeze(1)).sum((0, 2, 3))
            for c, _, mask in groups:
                concept_area[c] += mask.sum()
        if inter is None or unit_area is None or concept_area is None:
            raise ValueError("NetworkDissection: expected at least one image, but got none.")
        return inter.float(), unit_area.float(), concept_area.float()

    @staticmethod
    def iou(intersection: Tensor, unit_area: Tensor, concept_area: Tensor) -> Tensor:
        """``[K, C]`` IoU from :meth:`counts` (0 where the union is empty)."""
        union = unit_area.unsqueeze(1) + concept_area.unsqueeze(0) - intersection
        return torch.where(union > 0, intersection / union.clamp(min=1.0), torch.zeros_like(union))

    def __call__(
        self,
        model: nn.Module,
        images: Tensor | Dataset,
        masks: Mapping[str, Tensor] | Tensor,
        names: Sequence[str] | None = None,
    ) -> DissectionResult:
        """Dissect ``layer`` of ``model`` on ``images`` with the concept ``masks``.

        Args:
            model: The model.
            images: ``[N, ...]`` images, or a map-style ``Dataset`` of them (read batch by batch).
            masks: ``{concept: [N, H, W] or [N, 1, H, W] masks}`` (nonzero = concept), or a
                ``[N, C, H, W]`` tensor with ``names``.
            names: Concept names for a mask tensor.

        Returns:
            The :class:`DissectionResult`.

        Raises:
            ValueError: unknown layer, masks that do not match the images, images the model cannot run on.
            LightningXAIError: the layer does not return ``[B, K, h, w]`` maps.
        """
        self.check(model)
        concept_masks, concept_names = as_concept_masks(masks, names)
        n = len(images)  # type: ignore[arg-type]
        if concept_masks.shape[0] != n:
            raise ValueError(f"NetworkDissection: {n} images but masks for {concept_masks.shape[0]}.")
        thresholds = self.thresholds(model, images)
        inter, unit_area, concept_area = self.counts(model, images, concept_masks, thresholds)
        return DissectionResult(
            layer=self.layer,
            concepts=concept_names,
            thresholds=thresholds.cpu(),
            iou=self.iou(inter, unit_area, concept_area).cpu(),
            iou_threshold=self.iou_threshold,
        )
