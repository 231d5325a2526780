"""``ShortcutAlarm``: raise a hand while a model learns a shortcut (a "Clever Hans" strategy).

The evidence follows Spectral Relevance Analysis (SpRAy; Lapuschkin et al. 2019, "Unmasking Clever
Hans predictors and assessing what machines really learn"): the relevance maps of many images of one
class are downsampled, normalised and clustered; a cluster whose members all put their relevance on
the same place is a strategy the model uses for that class. SpRAy (and its tool, CoRelAy) does this
once, offline, over thousands of maps, with spectral clustering on a k-nearest-neighbour graph and a
look at the eigengap. Here it runs every epoch on a small training probe (a few to a few dozen maps
per class): on so few points a kNN graph is degenerate, and spectral clustering reduces to k-means
on an eigenvector embedding anyway, so the maps are clustered with scikit-learn's ``KMeans``
directly (deterministic, seeded, milliseconds per class).

What makes a cluster a *shortcut* rather than the object: the place it agrees on is the class's
own, not where every class's evidence is (a centred object, as in digits, draws every class's maps
to the centre; a watermark draws one class's maps only), and, with ground-truth object masks, the
relevance lies outside the object.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import override

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import Explainer, OutputType, get_explainer
from lightning_xai.callbacks.base import ProbeMonitor, RunInfo
from lightning_xai.data.probe import Probe
from lightning_xai.errors import ShortcutWarning
from lightning_xai.render import reduce_channels
from lightning_xai.sinks import Sink

__all__ = ["ShortcutAlarm", "shortcut_evidence"]

ExplainerSpec = Union[Explainer, str]
ON_ALARM = ("warn", "stop", "raise")


def _default_explainers() -> list[Explainer]:
    from lightning_xai.attribution import GradCAM

    return [GradCAM()]


def _normalised(maps: Tensor, map_size: int) -> Tensor:
    """``[N, 1, H, W]`` maps as ``[N, map_size**2]`` distributions over locations (non-negative, sum 1;
    an all-zero or non-finite map becomes uniform)."""
    pooled = F.adaptive_avg_pool2d(torch.nan_to_num(maps.float().abs(), nan=0.0, posinf=0.0), map_size)
    flat = pooled.flatten(1).double()
    total = flat.sum(dim=1, keepdim=True)
    uniform = torch.full_like(flat, 1.0 / flat.shape[1])
    return torch.where(total > 0, flat / total.clamp_min(1e-300), uniform)


def shortcut_evidence(
    maps: Tensor,
    targets: Tensor,
    masks: Optional[Tensor] = None,
    *,
    map_size: int = 8,
    num_clusters: int = 2,
    region: float = 1 / 16,
    min_cluster_size: int = 3,
    seed: int = 0,
) -> dict[int, dict[str, Any]]:
    """SpRAy-style evidence, per class, that the class's maps agree on a place of their own.

    For each class with at least ``min_cluster_size`` maps: the maps (absolute values) are average
    pooled to ``map_size x map_size`` and normalised to sum 1, then clustered with k-means
    (``num_clusters``, seeded). For each cluster of at least ``min_cluster_size`` members, its
    *region* is the ``ceil(region * map_size**2)`` cells where its mean map is largest, and

    * ``agreement``: the members' mean share of relevance inside the region (1: every member puts
      all its relevance there; ``region``: no more than a uniform map);
    * ``others``: the other classes' probes' mean share inside the same region (no other classes:
      the uniform share), so a place where every class looks (a centred object) scores low;
    * ``outside``: with masks, the members' mean share of relevance outside their object masks
      (1 when there are no masks);
    * ``score = max(agreement - others, 0) * outside``, in ``[0, 1]``.

    The class's score is its best cluster's; the largest other cluster is its contrast. Cost: one
    pooling and one k-means (``n_init=4``) per class, milliseconds for a few dozen maps.

    Args:
        maps: ``[N, 1, H, W]`` maps.
        targets: ``[N]`` class indices.
        masks: Optional ``[N, 1, H', W']`` object masks in ``{0, 1}`` (resized to the maps' size).
        map_size: Side of the pooled grid.
        num_clusters: Clusters per class (fewer when a class has fewer maps).
        region: Fraction of the grid's cells a cluster's region covers.
        min_cluster_size: Fewest members a cluster (and a class) needs to be scored.
        seed: Seed of k-means.

    Returns:
        ``{class: evidence}`` with ``score``, ``agreement``, ``others``, ``outside``, ``members``
        and ``contrast`` (probe indices, lists of ints), ``region`` (the region's cells as
        ``[row, col]`` of the pooled grid), ``class_probes`` (the class's number of maps).
        Classes with too few maps are absent.

    Raises:
        ValueError: ``maps`` is not ``[N, 1, H, W]`` or ``targets`` is not ``[N]``.
    """
    import numpy
    from sklearn.cluster import KMeans

    if maps.ndim != 4 or maps.shape[1] != 1:
        raise ValueError(f"Expected `maps` of shape [N, 1, H, W], but got {tuple(maps.shape)}.")
    if targets.shape != (maps.shape[0],):
        raise ValueError(f"Expected `targets` of shape [{maps.shape[0]}], but got {tuple(targets.shape)}.")
    maps, targets = maps.detach().cpu(), targets.detach().cpu().long()
    dist = _normalised(maps, map_size)
    cells = max(1, math.ceil(region * map_size * map_size))
    outside_share: Optional[Tensor] = None
    if masks is not None:
        full = torch.nan_to_num(maps.float().abs(), nan=0.0, posinf=0.0).flatten(1).double()
        fg = F.interpolate(masks.detach().cpu().float(), size=maps.shape[-2:], mode="nearest").flatten(1).double()
        total = full.sum(dim=1)
        inside = (full * (fg > 0.5)).sum(dim=1)
        outside_share = torch.where(total > 0, 1.0 - inside / total.clamp_min(1e-300), torch.ones_like(total))
    found: dict[int, dict[str, Any]] = {}
    for c in sorted(set(targets.tolist())):
        idx = torch.nonzero(targets == c).flatten()
        if idx.numel() < min_cluster_size:
            continue
        other = dist[targets != c]
        points = dist[idx].numpy()
        k = min(num_clusters, len(numpy.unique(points, axis=0)))  # identical maps make one cluster
        labels = torch.as_tensor(KMeans(n_clusters=k, n_init=4, random_state=seed).fit(points).labels_)
        best: Optional[dict[str, Any]] = None
        clusters = sorted(range(k), key=lambda j: -int((labels == j).sum()))
        for j in clusters:
            members = idx[labels == j]
            if members.numel() < min_cluster_size:
                continue
            mean = dist[members].mean(dim=0)
            top = torch.topk(mean, cells).indices
            agreement = float(dist[members][:, top].sum(dim=1).mean())
            others = float(other[:, top].sum(dim=1).mean()) if len(other) else cells / dist.shape[1]
            outside = 1.0 if outside_share is None else float(outside_share[members].mean())
            score = max(agreement - others, 0.0) * outside
            if best is None or score > best["score"]:
                best = {
                    "score": score,
                    "agreement": agreement,
                    "others": others,
                    "outside": outside,
                    "members": members.tolist(),
                    "region": [[int(t) // map_size, int(t) % map_size] for t in top.tolist()],
                    "cluster": j,
                }
        if best is None:
            continue
        chosen = best.pop("cluster")
        rest = [j for j in clusters if j != chosen]
        best["contrast"] = idx[labels == rest[0]].tolist() if rest else []
        best["class_probes"] = int(idx.numel())
        found[int(c)] = best
    return found


def _tag(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_") or "class"


class ShortcutAlarm(ProbeMonitor):
    """Alarm when a class's predictions rest on something other than the object.

    Every run it explains a fixed, class-balanced probe of **training** images (the shortcut lives
    where the model learns it; validation images may not carry it) with respect to their labels,
    and scores each class with :func:`shortcut_evidence`: the maps of the class are clustered
    (SpRAy-style), and a class scores high when one cluster of at least ``min_cluster_size`` maps
    agrees on a small region (``region`` of the grid) that the other classes' maps do not use, and,
    where the data has object masks, that lies outside the objects. The score is in ``[0, 1]``;
    with several explainers a class's score is the largest.

    Per run it logs ``xai/shortcut/<class>`` (the score) and, for each new alarm, the evidence
    picture ``xai/shortcut/<class>/evidence``: the alarming cluster's mean map next to its members'
    overlays, then the class's other cluster for contrast. An alarm is raised when a class's score
    reaches ``threshold`` on ``patience`` consecutive runs (once; again only after the score fell
    below it): it is appended to
    :attr:`alarms` (``epoch``, ``class``, ``score``, ``evidence``; kept in the checkpoint), a
    :class:`~lightning_xai.ShortcutWarning` names the class, the explainer, the epoch and the
    evidence, and ``on_alarm`` decides what follows: ``"warn"`` only; ``"stop"`` sets
    ``trainer.should_stop`` (Lightning's early-stopping path; decided on every rank);
    ``"raise"`` raises the :class:`~lightning_xai.ShortcutWarning` (on every rank).

    **Tuning.** The default ``threshold=0.4`` reads: at least 40% more of the cluster's relevance
    lies in its region than the other classes put there. On the small shapes configuration of the
    docs' shortcut page a marker-fed class alarms with 0.65 to 0.78 at the 4th or 5th epoch (3
    seeds), and without the marker no class alarms in 10 epochs (its only scores over 0.4 are
    epoch-0 spikes, which ``patience=2`` absorbs). Lower it to catch shortcuts that cover part of the class
    (``shortcut_strength < 1``); raise it when objects of one class always sit in one place
    (then its maps agree on a place of their own for a legitimate reason; masks help there).
    ``region`` should match the size of the shortcut you fear, as a fraction of the image
    (default 1/16: a corner patch a quarter of the side); ``num_samples`` sets how many maps per
    class are clustered (at least ``min_cluster_size`` per class are needed, a dozen or more
    make the score stable).

    Cost per run: the explainers on ``num_samples`` probe images, plus one k-means per class and
    explainer (milliseconds). Training is never perturbed: the explainers run inside
    :func:`~lightning_xai.attribution.observe`, k-means has its own seeded generator.

    Args:
        explainers: Explainer objects or registry names. Default: ``[GradCAM()]`` (region maps,
            cheap, where a location is the question).
        num_samples: Probe size (class-balanced, from the training data).
        every_n_epochs: Run every n epochs.
        every_n_train_steps: Run every n training steps instead.
        threshold: Score in ``(0, 1]`` at which a class alarms.
        patience: Consecutive runs a class's score must reach ``threshold`` before it alarms (an
            untrained network's maps can agree on a border by chance for one run; a learned
            shortcut stays).
        on_alarm: ``"warn"``, ``"stop"`` or ``"raise"``.
        map_size: Side of the grid the maps are pooled to before clustering.
        num_clusters: Clusters per class.
        region: Fraction of the grid a cluster's region covers.
        min_cluster_size: Fewest maps a cluster needs to be scored.
        class_names: Names for the class indices in tags and messages (default: the datamodule's
            or training dataset's ``classes``, else the indices).
        seed: Seed of the probe selection and of k-means.
        probe: Optional user probe ``(inputs, targets[, masks])``, Dataset or DataLoader;
            default: read from the training dataloader.
        output: How to pick the ``[B, C]`` scores when the model's forward returns a tuple, dict
            or dataclass.
        max_overhead: Time budget as a fraction of training time (see ``MonitorBase``).
        synchronous_logging: Render on the training thread (``True``), in the background
            (``False``), or by the model's device (``None``).

    Raises:
        ValueError: Bad arguments (here), a probe without labels (at ``setup``).

    Examples:
        >>> alarm = ShortcutAlarm(num_samples=64, on_alarm="stop")
        >>> # pl.Trainer(callbacks=[alarm]).fit(model, datamodule); alarm.alarms
    """

    def __init__(
        self,
        explainers: Optional[Sequence[ExplainerSpec]] = None,
        *,
        num_samples: int = 64,
        every_n_epochs: int = 1,
        every_n_train_steps: Optional[int] = None,
        threshold: float = 0.4,
        patience: int = 2,
        on_alarm: str = "warn",
        map_size: int = 8,
        num_clusters: int = 2,
        region: float = 1 / 16,
        min_cluster_size: int = 3,
        class_names: Optional[list[str]] = None,
        seed: int = 0,
        probe: Optional[Any] = None,
        output: OutputType = None,
        max_overhead: Optional[float] = None,
        synchronous_logging: Optional[bool] = None,
    ) -> None:
        super().__init__(
            num_samples=num_samples,
            every_n_epochs=every_n_epochs,
            every_n_train_steps=every_n_train_steps,
            seed=seed,
            probe=probe,
            output=output,
            max_overhead=max_overhead,
            synchronous_logging=synchronous_logging,
        )
        check_float("threshold", threshold, 0.0, 1.0)
        if threshold <= 0:
            raise ValueError(f"Expected argument `threshold` to be a float in the (0,1] range, but got {threshold}.")
        if on_alarm not in ON_ALARM:
            raise ValueError(f"Expected argument `on_alarm` to be one of {ON_ALARM}, but got {on_alarm!r}.")
        check_int("patience", patience, 1)
        check_int("map_size", map_size, 2)
        check_int("num_clusters", num_clusters, 1)
        check_float("region", region, 0.0, 1.0)
        if region <= 0:
            raise ValueError(f"Expected argument `region` to be a float in the (0,1] range, but got {region}.")
        check_int("min_cluster_size", min_cluster_size, 1)
        resolved = _default_explainers() if explainers is None else [self._resolve(e) for e in explainers]
        if not resolved:
            raise ValueError("Expected argument `explainers` to hold at least one explainer, but got an empty list.")
        self.explainers: list[Explainer] = resolved
        self.names = [e.registry_name or type(e).__name__.lower() for e in resolved]
        self.names = [n if self.names.count(n) == 1 else f"{n}_{i}" for i, n in enumerate(self.names)]
        self.threshold = float(threshold)
        self.patience = patience
        self.on_alarm = on_alarm
        self.map_size = map_size
        self.num_clusters = num_clusters
        self.region = float(region)
        self.min_cluster_size = min_cluster_size
        self.class_names = list(class_names) if class_names is not None else None
        self.alarms: list[dict[str, Any]] = []
        """Every alarm so far: ``{"epoch", "class", "class_index", "score", "explainer", "evidence"}``."""
        self.scores: list[dict[str, Any]] = []
        """Every run's scores: ``{"epoch": e, "scores": {class: score}}``."""
        self._alarmed: set[int] = set()
        self._streak: dict[int, int] = {}

    @staticmethod
    def _resolve(spec: ExplainerSpec) -> Explainer:
        if isinstance(spec, Explainer):
            return spec
        if isinstance(spec, str):
            return get_explainer(spec)
        raise TypeError(
            f"Expected each explainer to be an Explainer or a registered name, but got {type(spec).__name__}."
        )

    @property
    @override
    def log_key(self) -> str:
        return "shortcut"

    @override
    def _state_key_fields(self) -> dict[str, Any]:
        return {**super()._state_key_fields(), "explainers": [repr(e) for e in self.explainers]}

    @override
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["alarms"] = [dict(a) for a in self.alarms]
        state["scores"] = [dict(s) for s in self.scores]
        state["alarmed"] = sorted(self._alarmed)
        state["streak"] = dict(self._streak)
        return state

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.alarms = [dict(a) for a in state_dict.get("alarms", [])]
        self.scores = [dict(s) for s in state_dict.get("scores", [])]
        self._alarmed = set(state_dict.get("alarmed", []))
        self._streak = {int(k): int(v) for k, v in state_dict.get("streak", {}).items()}

    # -- setup ---------------------------------------------------------------------------------
    @override
    def _probe_source(self, trainer: pl.Trainer) -> Any:
        if self._user_probe is not None:
            return self._user_probe
        # the training data: the shortcut lives where the model learns it (private: no public accessor)
        source = trainer.fit_loop._data_source
        if source.is_defined():
            loader = source.dataloader()
            if isinstance(loader, (list, tuple)):
                loader = loader[0] if loader else None
            if isinstance(loader, dict):
                loader = next(iter(loader.values()), None)
            if loader is not None:
                return loader
        return super()._probe_source(trainer)

    @override
    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe is not None and self.probe.targets is None:
            raise ValueError("ShortcutAlarm needs labelled probe images (each class's maps are clustered).")
        if self.probe is not None and self.probe.inputs.ndim != 4:
            raise ValueError(
                f"ShortcutAlarm needs image inputs [B, C, H, W]; the probe inputs have shape "
                f"{tuple(self.probe.inputs.shape)}."
            )
        for explainer in self.explainers:
            explainer.check(pl_module)
        if self.class_names is None:
            self.class_names = self._find_class_names(trainer)

    @staticmethod
    def _find_class_names(trainer: pl.Trainer) -> Optional[list[str]]:
        datamodule = getattr(trainer, "datamodule", None)
        for owner in (datamodule, getattr(datamodule, "train_set", None), getattr(datamodule, "train_dataset", None)):
            names = getattr(owner, "classes", None)
            if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
                return list(names)
        return None

    def class_name(self, index: int) -> str:
        """The name of class ``index`` (its index as text when no names are known)."""
        names = self.class_names
        return names[index] if names is not None and 0 <= index < len(names) else str(index)

    # -- computation ---------------------------------------------------------------------------
    @override
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule, probe: Probe) -> dict[str, Tensor]:
        kwargs = {} if self.output is None else {"output": self.output}
        results: dict[str, Tensor] = {}
        for name, explainer in zip(self.names, self.explainers):
            maps = explainer(pl_module, probe.inputs, probe.targets, **kwargs)
            if maps.shape[1] != 1:
                maps = reduce_channels(maps, signed=explainer.signed)
            results[name] = maps.float()
        return results

    def evaluate(self, probe: Probe, results: dict[str, Tensor]) -> dict[int, dict[str, Any]]:
        """Each class's best evidence over the explainers (:func:`shortcut_evidence`), with ``explainer``."""
        assert probe.targets is not None
        best: dict[int, dict[str, Any]] = {}
        for name in self.names:
            found = shortcut_evidence(
                results[name],
                probe.targets,
                probe.masks,
                map_size=self.map_size,
                num_clusters=self.num_clusters,
                region=self.region,
                min_cluster_size=self.min_cluster_size,
                seed=self.seed,
            )
            for c, evidence in found.items():
                if c not in best or evidence["score"] > best[c]["score"]:
                    best[c] = {**evidence, "explainer": name}
        return best

    @override
    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.probe is not None
        probe, n = self.probe, len(self.probe)
        if trainer.world_size > 1:
            results = self.compute(trainer, pl_module, probe[self.shard(trainer, n)])
            results = {k: self.gather(trainer, v, n) for k, v in results.items()}
        else:
            results = self.compute(trainer, pl_module, probe)
        cpu_results = {k: v.detach().cpu() for k, v in results.items()}
        cpu_probe = probe.to("cpu")
        # every rank evaluates the same gathered maps, so the decision below is the same everywhere
        evidence = self.evaluate(cpu_probe, cpu_results)
        epoch = int(trainer.current_epoch)
        self.scores.append({"epoch": epoch, "scores": {self.class_name(c): e["score"] for c, e in evidence.items()}})
        new = []
        for c in set(self._streak) - set(evidence):
            self._streak[c] = 0
        for c, ev in sorted(evidence.items()):
            self._streak[c] = self._streak.get(c, 0) + 1 if ev["score"] >= self.threshold else 0
            if self._streak[c] >= self.patience and c not in self._alarmed:
                self._alarmed.add(c)
                record = {
                    "epoch": epoch,
                    "class": self.class_name(c),
                    "class_index": c,
                    "score": ev["score"],
                    "explainer": ev["explainer"],
                    "evidence": {k: v for k, v in ev.items() if k not in ("score", "explainer")},
                }
                new.append(record)
            elif ev["score"] < self.threshold:
                self._alarmed.discard(c)
        self.alarms.extend(new)
        fire = bool(trainer.strategy.reduce_boolean_decision(bool(new), all=False))
        if trainer.is_global_zero:
            self.publish(trainer, lambda sinks, info: self._render(sinks, info, cpu_probe, cpu_results, evidence, new))
        messages = [self._message(a) for a in new]
        if trainer.is_global_zero:
            for message in messages:
                warnings.warn(message, ShortcutWarning, stacklevel=2)
        if fire and self.on_alarm == "stop":
            trainer.should_stop = True
        elif fire and self.on_alarm == "raise":
            self.flush()
            raise ShortcutWarning(
                "; ".join(messages) or f"ShortcutAlarm: another rank raised a shortcut alarm at epoch {epoch}."
            )

    def _message(self, alarm: dict[str, Any]) -> str:
        ev = alarm["evidence"]
        where = ", ".join(f"({r},{c})" for r, c in ev["region"])
        masks = "" if ev["outside"] == 1.0 else f"; {ev['outside']:.0%} of it outside the object masks"
        return (
            f"ShortcutAlarm: class {alarm['class']!r} at epoch {alarm['epoch']} ({alarm['explainer']}): "
            f"{len(ev['members'])} of its {ev['class_probes']} training probe maps agree on cells [{where}] of a "
            f"{self.map_size}x{self.map_size} grid ({ev['agreement']:.0%} of their relevance there, the other "
            f"classes' maps {ev['others']:.0%}){masks}; score {alarm['score']:.2f} >= threshold {self.threshold}."
        )

    # -- rendering (rank zero) -----------------------------------------------------------------
    @override
    def render(self, sinks: Sequence[Sink], info: RunInfo, probe: Probe, results: dict[str, Tensor]) -> None:
        """The dry run's path: one evidence picture of the first probe image against itself."""
        fake = {
            "epoch": info.epoch,
            "class": "dry_run",
            "score": 0.0,
            "explainer": self.names[0],
            "evidence": {"members": [0], "contrast": [0]},
        }
        self._render(sinks, info, probe, results, {}, [fake])

    def _render(
        self,
        sinks: Sequence[Sink],
        info: RunInfo,
        probe: Probe,
        results: dict[str, Tensor],
        evidence: dict[int, dict[str, Any]],
        alarms: list[dict[str, Any]],
    ) -> None:
        scalars = {f"xai/shortcut/{_tag(self.class_name(c))}": float(e["score"]) for c, e in evidence.items()}
        for sink in sinks:
            if scalars:
                sink.log_scalars(scalars, info.step)
        for alarm in alarms:
            image = self.evidence_picture(probe, results[alarm["explainer"]], alarm)
            tag = f"xai/shortcut/{_tag(alarm['class'])}/evidence"
            for sink in sinks:
                sink.log_image(tag, image, info.step, caption=f"epoch {alarm['epoch']}")

    def evidence_picture(self, probe: Probe, maps: Tensor, alarm: dict[str, Any]) -> Tensor:
        """The alarm's picture: the cluster's mean map, then its members' overlays; below, the class's
        other cluster the same way (for contrast). ``[3, H, W]`` in ``[0, 1]``."""
        from lightning_xai.render import annotated_grid, heatmap_to_rgb, overlay, to_display

        ev = alarm["evidence"]
        size = probe.inputs.shape[-2:]
        maps = torch.nan_to_num(maps.float().abs(), nan=0.0, posinf=0.0)
        if maps.shape[-2:] != size:
            maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        groups = [("shortcut cluster", ev["members"]), ("other cluster", ev.get("contrast", []))]
        max_members = min(7, max(len(m) for _, m in groups))
        rows: list[Tensor] = []
        captions: list[str] = []
        for label, members in groups:
            if not members:
                continue
            shown = members[:max_members]
            mean = maps[members].mean(dim=0, keepdim=True)
            tiles = [heatmap_to_rgb(mean, signed=False)]
            tiles.append(overlay(to_display(probe.inputs[shown].float()), maps[shown], signed=False))
            blank = torch.ones(max_members - len(shown), 3, *size)
            rows.append(torch.cat([*tiles, blank]))
            captions += [f"{label}\nmean of {len(members)}"] + [f"probe {i}" for i in shown] + [""] * len(blank)
        title = f"{alarm['class']}: epoch {alarm['epoch']}, {alarm['explainer']}, shortcut score {alarm['score']:.2f}"
        return annotated_grid(torch.cat(rows), captions, ncols=max_members + 1, title=title, colorbar="unsigned")
