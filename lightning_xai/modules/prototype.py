"""The prototype layer of ProtoPNet ("This looks like that", Chen et al. 2019) as a swappable head.

:class:`PrototypeHead` takes a backbone's last feature map ``[B, C, H, W]``, embeds it with two 1x1
convolutions (ReLU, then sigmoid, as in the paper), measures the squared L2 distance of every
prototype to every patch of the embedding, turns the smallest distance per prototype into a
similarity ``log((d + 1) / (d + eps))`` and classifies with a linear layer over the similarities
that starts as the class identity (1 for a prototype's own class, -0.5 for the others).

:class:`NearestPatches` is the library half of the *push* (projection) step: streamed over the
training set, it keeps, for each prototype, the nearest embedding patch of an image of its own
class; :meth:`PrototypeHead.push` then replaces the prototypes by those patches and records where
each came from. :class:`~lightning_xai.callbacks.PrototypePush` drives it during training.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int

__all__ = [
    "DEFAULT_COEFFICIENTS",
    "DEFAULT_LEARNING_RATES",
    "STAGES",
    "NearestPatches",
    "PrototypeHead",
    "PrototypeOutput",
    "find_prototype_head",
    "patch_boxes",
    "prototype_parameter_groups",
    "set_stage",
]

_FORWARD_RECORD = "_prototype_head_min_distances"
"""Name of the attribute by which ``PrototypeHead.forward``'s logits carry ``(weakref to the head, min distances)``."""

DEFAULT_COEFFICIENTS: dict[str, float] = {"cross_entropy": 1.0, "cluster": 0.8, "separation": -0.08, "l1": 1e-4}
"""The paper's loss coefficients: ``loss = CE + 0.8 Clst - 0.08 Sep + 1e-4 L1``."""


@dataclass
class PrototypeOutput:
    """Everything one forward pass of :class:`PrototypeHead` computes.

    Attributes:
        logits: ``[B, num_classes]``.
        min_distances: ``[B, P]``, each prototype's smallest squared distance to any patch.
        distances: ``[B, P, H', W']``, every prototype's squared distance to every patch.
    """

    logits: Tensor
    min_distances: Tensor
    distances: Tensor

    @property
    def similarities(self) -> Tensor:
        """``[B, P]`` the similarity scores the last layer weighs (``log((d + 1) / (d + eps))``)."""
        return torch.log((self.min_distances + 1) / (self.min_distances + PrototypeHead.epsilon))


def patch_boxes(position: Tensor, prototype_shape: Sequence[int], grid: Sequence[int], image: Sequence[int]) -> Tensor:
    """Pixel boxes of embedding patches: the patch at ``position`` (row, col) on a ``grid``
    ``(H, W)`` embedding, scaled to an ``image`` ``(H_img, W_img)``.

    Returns ``[N, 4]`` long ``(top, left, bottom, right)``, bottom/right exclusive: the patch's
    share of the image, rounded outwards. (The paper's pictures box the region where the upsampled
    similarity map exceeds its 95th percentile instead; the similarity maps show that region.)

    Examples:
        >>> patch_boxes(torch.tensor([[1, 2]]), (1, 1), (4, 4), (32, 32)).tolist()
        [[8, 16, 16, 24]]
    """
    (ph, pw), (gh, gw), (ih, iw) = tuple(prototype_shape), tuple(grid), tuple(image)
    r, c = position[:, 0].double(), position[:, 1].double()
    top = torch.floor(r * ih / gh)
    left = torch.floor(c * iw / gw)
    bottom = torch.ceil((r + ph) * ih / gh)
    right = torch.ceil((c + pw) * iw / gw)
    return torch.stack([top, left, bottom, right], dim=1).long()


class PrototypeHead(nn.Module):
    """ProtoPNet's prototype layer and class-identity last layer, as a head for any CNN backbone.

    ``P = num_classes * prototypes_per_class`` prototypes, each ``[prototype_dim, *prototype_shape]``
    and assigned to one class (``prototype_class``, ``P`` long, prototypes of class ``k`` at
    ``k * prototypes_per_class ...``). The forward pass, from a feature map ``[B, in_channels, H, W]``:

    1. add-on layers ``conv1x1 -> ReLU -> conv1x1 -> sigmoid`` give the embedding ``z`` ``[B, D, H, W]``;
    2. ``distances``: ``||z_patch - p||^2`` for every prototype and every ``prototype_shape`` patch,
       as one convolution-style expansion ``||z||^2 - 2 z*p + ||p||^2`` (no loop over patches),
       ``[B, P, H - ph + 1, W - pw + 1]``;
    3. the minimum over patches, turned into a similarity ``log((d + 1) / (d + 1e-4))``;
    4. ``last_layer`` (no bias), initialised 1 for a prototype's own class and -0.5 for the others.

    ``forward`` returns the logits, so the head drops into a network's forward; :meth:`explain`
    returns the full :class:`PrototypeOutput`, and :meth:`loss_terms` takes either. The head keeps
    nothing from a call: the per-prototype minimum distances the losses need travel with the
    logits tensor ``forward`` returns (they are part of the logits' own autograd graph), so a
    forward's graph, an explainer's included, is freed as soon as its caller drops the logits.

    The push records, buffers filled by :meth:`push` and saved with the model: ``prototype_source``
    (``[P]`` training-set index of the image each prototype was projected onto, -1 before any
    push), ``prototype_position`` (``[P, 2]`` its patch's row and column on the embedding grid) and
    ``prototype_box`` (``[P, 4]`` that patch's pixel box ``(top, left, bottom, right)``).

    Args:
        in_channels: channels of the backbone's feature map.
        num_classes: number of classes.
        prototypes_per_class: prototypes per class (the paper: 10).
        prototype_dim: channels of the embedding and the prototypes (the paper: 128 for ResNets).
        prototype_shape: ``(ph, pw)`` patch size on the embedding grid (the paper: ``(1, 1)``).
        coefficients: loss coefficients overriding :data:`DEFAULT_COEFFICIENTS` by name.

    Raises:
        TypeError / ValueError: bad sizes or coefficients.

    Examples:
        >>> head = PrototypeHead(16, num_classes=3, prototypes_per_class=2, prototype_dim=8)
        >>> logits = head(torch.rand(4, 16, 5, 5))
        >>> logits.shape, head.distances(torch.rand(4, 16, 5, 5)).shape
        (torch.Size([4, 3]), torch.Size([4, 6, 5, 5]))
        >>> sorted(head.loss_terms(logits, torch.tensor([0, 1, 2, 0])))
        ['cluster', 'cross_entropy', 'l1', 'loss', 'separation']
    """

    wants_feature_map = True
    """:func:`~lightning_xai.modules.swap_head` gives this head the last feature map."""

    epsilon = 1e-4
    """The ``eps`` of the similarity ``log((d + 1) / (d + eps))``."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        prototypes_per_class: int = 10,
        prototype_dim: int = 128,
        prototype_shape: Sequence[int] = (1, 1),
        coefficients: Optional[Mapping[str, float]] = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.num_classes = check_int("num_classes", num_classes, 1)
        self.prototypes_per_class = check_int("prototypes_per_class", prototypes_per_class, 1)
        self.prototype_dim = check_int("prototype_dim", prototype_dim, 1)
        if not isinstance(prototype_shape, Sequence) or len(prototype_shape) != 2:
            raise TypeError(f"Expected argument `prototype_shape` to be a pair (ph, pw), but got {prototype_shape!r}.")
        self.prototype_shape = (
            check_int("prototype_shape[0]", prototype_shape[0], 1),
            check_int("prototype_shape[1]", prototype_shape[1], 1),
        )
        coefficients = dict(coefficients or {})
        unknown = set(coefficients) - set(DEFAULT_COEFFICIENTS)
        if unknown:
            raise ValueError(
                f"Unknown loss coefficient(s) {sorted(unknown)}; expected names from {sorted(DEFAULT_COEFFICIENTS)}."
            )
        self.coefficients = {
            k: check_float(f"coefficients[{k!r}]", coefficients.get(k, v)) for k, v in DEFAULT_COEFFICIENTS.items()
        }
        num_prototypes = self.num_classes * self.prototypes_per_class
        d = self.prototype_dim
        self.add_on = nn.Sequential(nn.Conv2d(in_channels, d, 1), nn.ReLU(), nn.Conv2d(d, d, 1), nn.Sigmoid())
        self.prototypes = nn.Parameter(torch.rand(num_prototypes, d, *self.prototype_shape))
        self.last_layer = nn.Linear(num_prototypes, num_classes, bias=False)
        self.register_buffer(
            "prototype_class", torch.arange(num_classes).repeat_interleave(self.prototypes_per_class), persistent=True
        )
        self.register_buffer("prototype_source", torch.full((num_prototypes,), -1, dtype=torch.long))
        self.register_buffer("prototype_position", torch.zeros(num_prototypes, 2, dtype=torch.long))
        self.register_buffer("prototype_box", torch.zeros(num_prototypes, 4, dtype=torch.long))
        for m in self.add_on:
            if isinstance(m, nn.Conv2d):  # the paper's initialisation of the add-on layers
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.reset_last_layer()

    # ---------------------------------------------------------------------------------------
    @property
    def num_prototypes(self) -> int:
        """``P``, the number of prototypes."""
        return self.prototypes.shape[0]

    def class_identity(self) -> Tensor:
        """``[P, num_classes]`` one-hot: 1 where prototype ``j`` belongs to class ``k``."""
        return F.one_hot(self.prototype_class, self.num_classes).to(self.last_layer.weight.dtype)

    @torch.no_grad()
    def reset_last_layer(self, incorrect_strength: float = -0.5) -> None:
        """Set the last layer to the class identity: 1 for own class, ``incorrect_strength`` otherwise."""
        identity = self.class_identity().t()
        self.last_layer.weight.copy_(identity + incorrect_strength * (1 - identity))

    def _check_features(self, features: Tensor) -> None:
        if not isinstance(features, Tensor) or features.dim() != 4:
            shape = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
            raise ValueError(f"PrototypeHead expects a feature map [B, C, H, W], but got {shape}.")
        if features.shape[1] != self.in_channels:
            raise ValueError(
                f"PrototypeHead was built for in_channels={self.in_channels}, but the feature map has "
                f"{features.shape[1]} channels (shape {tuple(features.shape)})."
            )
        ph, pw = self.prototype_shape
        if features.shape[2] < ph or features.shape[3] < pw:
            raise ValueError(
                f"PrototypeHead's prototype_shape {self.prototype_shape} is larger than the feature map "
                f"{tuple(features.shape[2:])}."
            )

    def embed(self, features: Tensor) -> Tensor:
        """The add-on embedding ``[B, prototype_dim, H, W]`` of a feature map ``[B, in_channels, H, W]``."""
        self._check_features(features)
        return self.add_on(features)

    def patch_distances(self, embedding: Tensor) -> Tensor:
        """Squared L2 distance of every prototype to every patch of an embedding: ``[B, P, H', W']``.

        ``||z - p||^2 = ||z||^2 - 2 z.p + ||p||^2``, each term a convolution over the whole map,
        clamped at zero against rounding.
        """
        p = self.prototypes
        ph, pw = self.prototype_shape
        z2 = embedding.square().sum(dim=1, keepdim=True)  # [B, 1, H, W]
        if (ph, pw) == (1, 1):  # 1x1 patches: a matrix product (cheaper than a 1x1 convolution on the CPU)
            zp = torch.einsum("bdhw,pd->bphw", embedding, p.flatten(1))
        else:  # sum of ||z||^2 over each patch (an average pool times its area), and the correlation
            z2 = F.avg_pool2d(z2, (ph, pw), stride=1) * (ph * pw)
            zp = F.conv2d(embedding, p)
        p2 = p.square().sum(dim=(1, 2, 3)).view(1, -1, 1, 1)
        return (z2 - 2 * zp + p2).relu()

    def distances(self, features: Tensor) -> Tensor:
        """Squared L2 distances ``[B, P, H', W']`` of every prototype to every patch of the add-on
        embedding of a backbone feature map (``H' = H - ph + 1``, ``W' = W - pw + 1``)."""
        return self.patch_distances(self.embed(features))

    @classmethod
    def similarity(cls, distances: Tensor) -> Tensor:
        """The paper's similarity of a squared distance, ``log((d + 1) / (d + eps))`` (elementwise)."""
        return torch.log((distances + 1) / (distances + cls.epsilon))

    def explain(self, features: Tensor) -> PrototypeOutput:
        """The full forward pass: logits, per-prototype minimum distances and the distance maps."""
        distances = self.distances(features)
        min_distances = distances.flatten(2).amin(dim=2)
        logits = self.last_layer(self.similarity(min_distances))
        return PrototypeOutput(logits=logits, min_distances=min_distances, distances=distances)

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``, carrying this call's minimum distances for :meth:`loss_terms`.

        The ``[B, P]`` minimum distances are attached to the returned tensor (not kept by the head):
        they are an intermediate of the logits' own graph, so they cost ``B * P`` values and live
        exactly as long as the logits do. An operation on the logits (``clone``, ``.float()``, a
        DataParallel gather) returns a tensor without them.
        """
        output = self.explain(features)
        setattr(output.logits, _FORWARD_RECORD, (weakref.ref(self), output.min_distances))
        return output.logits

    # ---------------------------------------------------------------------------------------
    def loss_terms(self, outputs: Union[Tensor, PrototypeOutput], targets: Tensor) -> dict[str, Tensor]:
        """The paper's training objective, term by term.

        * ``cross_entropy``: of the logits and ``targets``;
        * ``cluster``: mean over the batch of the smallest distance from the image to a prototype
          of its own class (pulls each image close to one of its class's prototypes);
        * ``separation``: mean over the batch of the smallest distance to a prototype of another
          class (its coefficient is negative: pushes those apart);
        * ``l1``: the L1 norm of the last-layer weights joining prototypes to other classes;
        * ``loss``: ``sum(coefficients[k] * term[k])`` (the paper: 1, 0.8, -0.08, 1e-4).

        Args:
            outputs: the :class:`PrototypeOutput` of :meth:`explain`, or the logits returned by this
                head's ``forward`` (the minimum distances then come with them).
            targets: ``[B]`` class indices.

        Raises:
            ValueError: ``outputs`` is a tensor that is not logits returned by this head's
                ``forward``, or ``targets`` does not match.
        """
        if isinstance(outputs, PrototypeOutput):
            logits, min_distances = outputs.logits, outputs.min_distances
        elif isinstance(outputs, Tensor):
            record = getattr(outputs, _FORWARD_RECORD, None)
            if record is None or record[0]() is not self:
                raise ValueError(
                    "PrototypeHead.loss_terms got a tensor that is not the logits returned by this head's forward "
                    "(an operation on the logits drops what the losses need); pass the logits themselves, or the "
                    "PrototypeOutput of `head.explain(features)`."
                )
            logits, min_distances = outputs, record[1]
        else:
            raise TypeError(f"Expected `outputs` to be a PrototypeOutput or logits, but got {type(outputs).__name__}.")
        if not isinstance(targets, Tensor) or targets.shape != logits.shape[:1]:
            shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
            raise ValueError(f"Expected `targets` of shape {tuple(logits.shape[:1])}, but got {shape}.")
        targets = targets.long()
        own = targets[:, None] == self.prototype_class[None, :]  # [B, P]
        inf = torch.tensor(math.inf, device=min_distances.device, dtype=min_distances.dtype)
        cluster = torch.where(own, min_distances, inf).amin(dim=1).mean()
        separation = torch.where(own, inf, min_distances).amin(dim=1).mean()
        if self.num_classes == 1:
            separation = torch.zeros_like(cluster)
        wrong = 1 - self.class_identity().t()
        terms = {
            "cross_entropy": F.cross_entropy(logits, targets),
            "cluster": cluster,
            "separation": separation,
            "l1": (self.last_layer.weight * wrong).abs().sum(),
        }
        terms["loss"] = sum(self.coefficients[k] * v for k, v in terms.items())  # type: ignore[assignment]
        return terms

    # ---------------------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The head's parameters by training role: ``add_on``, ``prototypes``, ``last_layer``."""
        return {
            "add_on": list(self.add_on.parameters()),
            "prototypes": [self.prototypes],
            "last_layer": list(self.last_layer.parameters()),
        }

    @torch.no_grad()
    def push(self, nearest: NearestPatches, image_size: Sequence[int]) -> None:
        """Replace every prototype by its nearest own-class training patch (changes the model).

        Args:
            nearest: the reduced :class:`NearestPatches` of a pass over the training set.
            image_size: ``(H, W)`` of the input images, for the pixel boxes.

        Raises:
            ValueError: some prototype found no patch (its class had no training image).
        """
        missing = (nearest.source < 0).nonzero().flatten()
        if missing.numel():
            classes = sorted(set(self.prototype_class[missing.to(self.prototype_class.device)].tolist()))
            raise ValueError(
                f"Push found no training image of class(es) {classes} for their prototypes: every class needs "
                "at least one training example."
            )
        device = self.prototypes.device
        self.prototypes.copy_(nearest.patch.to(device=device, dtype=self.prototypes.dtype))
        self.prototype_source.copy_(nearest.source.to(device))
        self.prototype_position.copy_(nearest.position.to(device))
        assert nearest.grid is not None
        self.prototype_box.copy_(
            patch_boxes(nearest.position, self.prototype_shape, nearest.grid, image_size).to(device)
        )


@dataclass
class NearestPatches:
    """For each prototype, the nearest own-class embedding patch seen so far (the push's running state).

    Attributes:
        distance: ``[P]`` squared distance (``inf`` until a patch of the class is seen).
        patch: ``[P, D, ph, pw]`` the patch itself.
        source: ``[P]`` long, dataset index of its image (-1 until seen).
        position: ``[P, 2]`` long, its (row, col) on the embedding grid.
        grid: ``(H, W)`` of the embedding grid (``None`` until the first update).

    Examples:
        >>> head = PrototypeHead(4, num_classes=2, prototypes_per_class=1, prototype_dim=3)
        >>> nearest = NearestPatches.empty(head)
        >>> nearest.update(head, torch.rand(2, 4, 3, 3), torch.tensor([0, 1]), torch.tensor([10, 11]))
        >>> nearest.source.tolist()
        [10, 11]
    """

    distance: Tensor
    patch: Tensor
    source: Tensor
    position: Tensor
    grid: Optional[tuple[int, int]] = None

    @classmethod
    def empty(cls, head: PrototypeHead) -> NearestPatches:
        """No patch seen yet, on the head's device."""
        p = head.prototypes
        return cls(
            distance=torch.full((p.shape[0],), math.inf, device=p.device, dtype=p.dtype),
            patch=torch.zeros_like(p, requires_grad=False),
            source=torch.full((p.shape[0],), -1, device=p.device, dtype=torch.long),
            position=torch.zeros(p.shape[0], 2, device=p.device, dtype=torch.long),
        )

    @torch.no_grad()
    def update(self, head: PrototypeHead, features: Tensor, labels: Tensor, indices: Tensor) -> None:
        """Fold a batch in: backbone ``features`` ``[B, C, H, W]``, class ``labels`` ``[B]`` and dataset
        ``indices`` ``[B]``. Vectorised over prototypes, images and patches; an earlier patch wins ties."""
        z = head.embed(features)
        d = head.patch_distances(z)  # [B, P, H', W']
        b, p, h, w = d.shape
        own = labels.to(d.device).long()[:, None] == head.prototype_class[None, :]
        d = d.masked_fill(~own[:, :, None, None], math.inf)
        best, arg = d.transpose(0, 1).reshape(p, b * h * w).min(dim=1)
        better = best < self.distance
        if not bool(better.any()):
            self.grid = (z.shape[2], z.shape[3])
            return
        img, rest = arg // (h * w), arg % (h * w)
        row, col = rest // w, rest % w
        ph, pw = head.prototype_shape
        rows = (row[:, None] + torch.arange(ph, device=d.device))[:, None, :, None]
        cols = (col[:, None] + torch.arange(pw, device=d.device))[:, None, None, :]
        chans = torch.arange(z.shape[1], device=d.device)[None, :, None, None]
        patch = z[img[:, None, None, None], chans, rows, cols]  # [P, D, ph, pw]
        self.distance = torch.where(better, best, self.distance)
        self.patch = torch.where(better[:, None, None, None], patch.to(self.patch.dtype), self.patch)
        self.source = torch.where(better, indices.to(d.device).long()[img], self.source)
        self.position = torch.where(better[:, None], torch.stack([row, col], dim=1), self.position)
        self.grid = (z.shape[2], z.shape[3])

    @classmethod
    def reduce(cls, stacked: NearestPatches) -> NearestPatches:
        """Combine per-rank results stacked on a leading dimension (``distance [R, P]``, ...): the
        nearest over ranks, the lowest rank on ties."""
        rank = stacked.distance.argmin(dim=0)  # [P]
        idx = torch.arange(rank.numel(), device=rank.device)
        return cls(
            distance=stacked.distance[rank, idx],
            patch=stacked.patch[rank, idx],
            source=stacked.source[rank, idx],
            position=stacked.position[rank, idx],
            grid=stacked.grid,
        )


STAGES: tuple[str, ...] = ("warm", "joint", "last_layer")
"""ProtoPNet's training stages, in the order the paper runs them (the last one after each push)."""

_TRAINABLE: dict[str, dict[str, bool]] = {
    "warm": {"backbone": False, "add_on": True, "prototypes": True, "last_layer": False},
    "joint": {"backbone": True, "add_on": True, "prototypes": True, "last_layer": False},
    "last_layer": {"backbone": False, "add_on": False, "prototypes": False, "last_layer": True},
}

DEFAULT_LEARNING_RATES: dict[str, float] = {"backbone": 1e-4, "add_on": 3e-3, "prototypes": 3e-3, "last_layer": 1e-4}
"""The paper's joint-stage learning rates per parameter group (its last-layer stage also uses 1e-4)."""


def find_prototype_head(model: nn.Module) -> tuple[str, PrototypeHead]:
    """The one :class:`PrototypeHead` inside ``model``: ``(dotted name, head)``.

    Raises:
        ValueError: none, or more than one.
    """
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, PrototypeHead)]
    if len(found) != 1:
        what = "no PrototypeHead" if not found else f"{len(found)} PrototypeHeads ({[n for n, _ in found]})"
        raise ValueError(f"Expected exactly one PrototypeHead in {type(model).__name__}, but found {what}.")
    return found[0]


def _role_parameters(model: nn.Module, head: PrototypeHead) -> dict[str, list[nn.Parameter]]:
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], **head.parameter_groups()}
    in_head = {id(p) for ps in groups.values() for p in ps}
    groups["backbone"] = [p for p in model.parameters() if id(p) not in in_head]
    return groups


def prototype_parameter_groups(
    model: nn.Module, learning_rates: Optional[Mapping[str, float]] = None
) -> list[dict[str, object]]:
    """Optimiser parameter groups for a network with a :class:`PrototypeHead`, one per role.

    Roles: ``backbone`` (every parameter outside the head), ``add_on``, ``prototypes`` and
    ``last_layer``, with the paper's learning rates (:data:`DEFAULT_LEARNING_RATES`) unless
    overridden. Each group carries its ``"name"``. Pass the list to one optimiser in
    ``configure_optimizers``; :func:`set_stage` (or the
    :class:`~lightning_xai.callbacks.PrototypeStages` callback) then switches stages by setting
    ``requires_grad``: a frozen parameter gets no gradient, so the optimiser skips it.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), PrototypeHead(8, 2, 1, 4))
        >>> groups = prototype_parameter_groups(net)
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('backbone', 0.0001, 2), ('add_on', 0.003, 4), ('prototypes', 0.003, 1), ('last_layer', 0.0001, 1)]
        >>> optimizer = torch.optim.Adam(groups)
    """
    rates = dict(DEFAULT_LEARNING_RATES)
    for key, value in (learning_rates or {}).items():
        if key not in rates:
            raise ValueError(f"Unknown parameter group {key!r}; expected names from {sorted(rates)}.")
        rates[key] = check_float(f"learning_rates[{key!r}]", value, 0.0)
    _, head = find_prototype_head(model)
    groups = _role_parameters(model, head)
    return [{"name": role, "params": params, "lr": rates[role]} for role, params in groups.items() if params]


def set_stage(model: nn.Module, stage: str) -> dict[str, bool]:
    """Switch a network with a :class:`PrototypeHead` to one of ProtoPNet's training stages.

    * ``"warm"``: backbone frozen; add-on layers and prototypes train.
    * ``"joint"``: backbone, add-on layers and prototypes train.
    * ``"last_layer"``: only the last layer trains (the convex step after a push).

    The last layer stays at its class-identity initialisation until the first ``"last_layer"``
    stage, as in the paper (its stage-1 optimisers hold no last-layer parameters).

    Sets ``requires_grad`` of every parameter of ``model`` (so it changes the model's training on
    purpose) and returns the role -> trainable map it applied.

    Raises:
        ValueError: unknown stage, or not exactly one PrototypeHead in ``model``.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), PrototypeHead(8, 2, 1, 4))
        >>> set_stage(net, "last_layer")["prototypes"], net[0].weight.requires_grad
        (False, False)
    """
    if stage not in _TRAINABLE:
        raise ValueError(f"Unknown stage {stage!r}; expected one of {STAGES}.")
    _, head = find_prototype_head(model)
    trainable = _TRAINABLE[stage]
    for role, params in _role_parameters(model, head).items():
        for p in params:
            p.requires_grad_(trainable[role])
    return dict(trainable)
