"""PrototypeHead: shapes, gradients, distances against an explicit loop, each loss term by hand, push state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lightning_xai.modules import NearestPatches, PrototypeHead, PrototypeOutput, patch_boxes


def make_head(shape=(2, 2), classes: int = 3, per_class: int = 2, dim: int = 4, channels: int = 5) -> PrototypeHead:
    torch.manual_seed(0)
    return PrototypeHead(channels, classes, prototypes_per_class=per_class, prototype_dim=dim, prototype_shape=shape)


def test_shapes_buffers_and_last_layer_init() -> None:
    head = make_head()
    assert head.prototypes.shape == (6, 4, 2, 2)
    assert head.prototype_class.dtype == torch.long and head.prototype_class.tolist() == [0, 0, 1, 1, 2, 2]
    assert head.prototype_source.tolist() == [-1] * 6
    expected = torch.full((3, 6), -0.5)
    for j, k in enumerate([0, 0, 1, 1, 2, 2]):
        expected[k, j] = 1.0
    torch.testing.assert_close(head.last_layer.weight, expected)
    assert head.last_layer.bias is None
    out = head.explain(torch.rand(2, 5, 4, 6))
    assert out.logits.shape == (2, 3) and out.min_distances.shape == (2, 6) and out.distances.shape == (2, 6, 3, 5)
    assert set(head.state_dict()) >= {"prototypes", "prototype_class", "prototype_source", "prototype_box"}


@pytest.mark.parametrize("shape", [(2, 3), (1, 1)])
def test_distances_equal_explicit_patch_loop(shape: tuple[int, int]) -> None:
    head = make_head(shape=shape)
    ph, pw = shape
    features = torch.rand(2, 5, 4, 5, dtype=torch.float64)
    head.double()
    z = head.add_on(features)
    d = head.distances(features)
    b, p, h, w = d.shape
    assert (h, w) == (5 - ph, 6 - pw)
    for i in range(b):
        for j in range(p):
            for r in range(h):
                for c in range(w):
                    patch = z[i, :, r : r + ph, c : c + pw]
                    torch.testing.assert_close(d[i, j, r, c], ((patch - head.prototypes[j]) ** 2).sum())
    # the add-on layers are the paper's: conv1x1, ReLU, conv1x1, sigmoid
    kinds = [type(m) for m in head.add_on]
    assert kinds == [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.Sigmoid]
    assert all(m.kernel_size == (1, 1) for m in head.add_on if isinstance(m, nn.Conv2d))
    # logits: the last layer over log((min d + 1) / (min d + 1e-4))
    out = head.explain(features)
    dmin = torch.tensor([[d[i, j].min().item() for j in range(p)] for i in range(b)], dtype=torch.float64)
    sim = torch.log((dmin + 1) / (dmin + 1e-4))
    torch.testing.assert_close(out.min_distances, dmin)
    torch.testing.assert_close(out.logits, sim @ head.last_layer.weight.t())
    torch.testing.assert_close(out.similarities, sim)


def test_gradients_reach_every_part() -> None:
    head = make_head()
    features = torch.rand(3, 5, 4, 4, requires_grad=True)
    logits = head(features)
    terms = head.loss_terms(logits, torch.tensor([0, 1, 2]))
    (grad_f,) = torch.autograd.grad(terms["loss"], features, retain_graph=True)
    assert grad_f.abs().sum() > 0
    terms["loss"].backward()
    for name, param in head.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_each_loss_term_by_hand() -> None:
    head = PrototypeHead(2, num_classes=2, prototypes_per_class=2, prototype_dim=2)
    with torch.no_grad():
        head.last_layer.weight.copy_(torch.tensor([[1.0, 2.0, -0.3, 0.4], [-0.7, 0.1, 3.0, 0.5]]))
    # prototype classes [0, 0, 1, 1]
    min_d = torch.tensor([[0.5, 2.0, 1.0, 4.0], [3.0, 0.25, 6.0, 0.75], [1.5, 2.5, 0.1, 9.0]])
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.25], [-1.0, 3.0]])
    targets = torch.tensor([0, 1, 1])
    out = PrototypeOutput(logits=logits, min_distances=min_d, distances=min_d[:, :, None, None])
    terms = head.loss_terms(out, targets)

    def ce(row: list[float], t: int) -> float:
        return -(row[t] - math.log(sum(math.exp(v) for v in row)))

    ce_hand = (ce([2.0, -1.0], 0) + ce([0.5, 0.25], 1) + ce([-1.0, 3.0], 1)) / 3
    cluster_hand = (min(0.5, 2.0) + min(6.0, 0.75) + min(0.1, 9.0)) / 3
    separation_hand = (min(1.0, 4.0) + min(3.0, 0.25) + min(1.5, 2.5)) / 3
    l1_hand = abs(-0.3) + abs(0.4) + abs(-0.7) + abs(0.1)
    assert terms["cross_entropy"].item() == pytest.approx(ce_hand, rel=1e-6)
    assert terms["cluster"].item() == pytest.approx(cluster_hand, rel=1e-6)
    assert terms["separation"].item() == pytest.approx(separation_hand, rel=1e-6)
    assert terms["l1"].item() == pytest.approx(l1_hand, rel=1e-6)
    total = ce_hand + 0.8 * cluster_hand - 0.08 * separation_hand + 1e-4 * l1_hand
    assert terms["loss"].item() == pytest.approx(total, rel=1e-6)
    custom = PrototypeHead(2, 2, 2, 2, coefficients={"cluster": 0.0, "l1": 1.0})
    with torch.no_grad():
        custom.last_layer.weight.copy_(head.last_layer.weight)
    total = ce_hand - 0.08 * separation_hand + l1_hand
    assert custom.loss_terms(out, targets)["loss"].item() == pytest.approx(total, rel=1e-6)


def test_bad_arguments_and_inputs() -> None:
    with pytest.raises(TypeError, match="in_channels"):
        PrototypeHead(2.0, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        PrototypeHead(2, 0)
    with pytest.raises(TypeError, match="prototype_shape"):
        PrototypeHead(2, 3, prototype_shape=(1,))
    with pytest.raises(ValueError, match="Unknown loss coefficient"):
        PrototypeHead(2, 3, coefficients={"clst": 1.0})
    head = make_head()
    with pytest.raises(ValueError, match="in_channels=5.*7 channels"):
        head(torch.rand(1, 7, 4, 4))
    with pytest.raises(ValueError, match="larger than the feature map"):
        head(torch.rand(1, 5, 1, 4))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        head(torch.rand(5, 4))
    logits = head(torch.rand(2, 5, 3, 3))
    with pytest.raises(ValueError, match="not the logits"):
        head.loss_terms(logits.clone(), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not the logits"):  # another head's logits
        head.loss_terms(make_head()(torch.rand(2, 5, 3, 3)), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets"):
        head.loss_terms(logits, torch.tensor([0, 1, 2]))


def test_head_keeps_nothing_from_a_forward_and_an_explainers_graph_is_freed() -> None:
    """No graph outlives its caller: after an explainer's call (and after a dropped training forward)
    the tensors saved in that forward's graph are gone; the head still deep-copies and pickles."""
    import gc
    import pickle
    import weakref

    from lightning_xai.attribution import Saliency

    torch.manual_seed(0)
    head = PrototypeHead(5, 3, prototypes_per_class=2, prototype_dim=4)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), head)
    saved: list[weakref.ref] = []  # the embedding, saved by the sigmoid for backward: alive while the graph is
    outputs: list[weakref.ref] = []  # the head's logits, the root of the forward's graph (their grad_fn)
    handles = [
        head.add_on[-1].register_forward_hook(lambda m, a, out: saved.append(weakref.ref(out))),
        head.register_forward_hook(lambda m, a, out: outputs.append(weakref.ref(out))),
    ]
    try:
        attribution = Saliency()(net, torch.rand(2, 3, 6, 6), target=1)
        gc.collect()
        assert attribution.shape == (2, 3, 6, 6) and len(outputs) == 1
        assert outputs[0]() is None, "the explainer's forward graph outlived its call"
        assert not any(isinstance(v, torch.Tensor) for v in vars(head).values())
        logits = net(torch.rand(2, 3, 6, 6))
        assert saved[1]() is not None  # alive while the caller holds the logits ...
        del logits
        gc.collect()
        assert saved[1]() is None  # ... and freed with them
        logits = net(torch.rand(2, 3, 6, 6))
        head.loss_terms(logits, torch.tensor([0, 2]))["loss"].backward()  # the losses still reach the distances
        assert head.prototypes.grad is not None and head.prototypes.grad.abs().sum() > 0
    finally:
        for handle in handles:
            handle.remove()
    clone = copy.deepcopy(head)
    torch.testing.assert_close(clone.prototypes, head.prototypes)
    restored = pickle.loads(pickle.dumps(head))
    torch.testing.assert_close(restored.prototypes, head.prototypes)


def brute_force_nearest(head: PrototypeHead, features: torch.Tensor, labels: torch.Tensor):
    z = head.add_on(features)
    ph, pw = head.prototype_shape
    best = []
    for j in range(head.num_prototypes):
        found = (math.inf, None, None, None)
        for i in range(features.shape[0]):
            if labels[i] != head.prototype_class[j]:
                continue
            for r in range(z.shape[2] - ph + 1):
                for c in range(z.shape[3] - pw + 1):
                    patch = z[i, :, r : r + ph, c : c + pw]
                    d = ((patch - head.prototypes[j]) ** 2).sum().item()
                    if d < found[0]:
                        found = (d, i, (r, c), patch)
        best.append(found)
    return best


def test_nearest_patches_match_brute_force_over_batches_and_ranks() -> None:
    head = make_head(shape=(1, 2)).double()
    torch.manual_seed(3)
    features = torch.rand(7, 5, 3, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 1])
    with torch.no_grad():
        expected = brute_force_nearest(head, features, labels)
        # the exact index checks below assume no ties: the nearest patch beats the runner-up by far more than
        # float64 rounding of these 4-term sums (~1e-15)
        d = head.distances(features)
        for j in range(head.num_prototypes):
            own = d[labels == head.prototype_class[j], j].flatten().sort().values
            assert own[1] - own[0] > 1e-9
    nearest = NearestPatches.empty(head)
    for chunk in (slice(0, 3), slice(3, 5), slice(5, 7)):  # streamed in batches, indices offset by 100
        nearest.update(head, features[chunk], labels[chunk], torch.arange(7)[chunk] + 100)
    # the same data split over two "ranks", reduced
    halves = [NearestPatches.empty(head), NearestPatches.empty(head)]
    halves[0].update(head, features[::2], labels[::2], torch.arange(7)[::2] + 100)
    halves[1].update(head, features[1::2], labels[1::2], torch.arange(7)[1::2] + 100)
    stacked = NearestPatches(
        *(torch.stack([getattr(h, f) for h in halves]) for f in ("distance", "patch", "source", "position")),
        grid=halves[0].grid,
    )
    reduced = NearestPatches.reduce(stacked)
    for found in (nearest, reduced):
        for j, (d, i, rc, patch) in enumerate(expected):
            assert found.source[j].item() == i + 100
            assert tuple(found.position[j].tolist()) == rc
            torch.testing.assert_close(found.distance[j].item(), d)
            torch.testing.assert_close(found.patch[j], patch)
    head.push(nearest, image_size=(12, 16))
    for j, (_, i, (r, c), patch) in enumerate(expected):
        torch.testing.assert_close(head.prototypes[j], patch)  # each prototype is now a real patch of its class
        assert labels[i] == head.prototype_class[j]
        assert head.prototype_box[j].tolist() == [4 * r, 4 * c, 4 * r + 4, 4 * c + 8]
    assert head.prototype_source.tolist() == [e[1] + 100 for e in expected]


def test_push_with_a_missing_class_raises() -> None:
    head = make_head()
    nearest = NearestPatches.empty(head)
    nearest.update(head, torch.rand(2, 5, 3, 3), torch.tensor([0, 2]), torch.tensor([0, 1]))
    before = head.prototypes.detach().clone()
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        head.push(nearest, image_size=(8, 8))
    torch.testing.assert_close(head.prototypes, before)


def test_patch_boxes_round_outwards() -> None:
    boxes = patch_boxes(torch.tensor([[0, 0], [2, 1]]), (1, 1), (3, 3), (10, 10))
    assert boxes.tolist() == [[0, 0, 4, 4], [6, 3, 10, 7]]


def test_stages_and_parameter_groups_train_only_their_parts() -> None:
    from lightning_xai.modules import find_prototype_head, prototype_parameter_groups, set_stage

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), PrototypeHead(5, 2, 2, 4))
    groups = prototype_parameter_groups(net, {"backbone": 0.5})
    assert [g["name"] for g in groups] == ["backbone", "add_on", "prototypes", "last_layer"]
    assert groups[0]["lr"] == 0.5 and groups[1]["lr"] == 3e-3
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    optimizer = torch.optim.Adam(groups)
    x, y = torch.rand(4, 3, 6, 6), torch.tensor([0, 1, 0, 1])
    head = find_prototype_head(net)[1]
    expected_trainable = {
        "warm": {"backbone": False, "add_on": True, "prototypes": True, "last_layer": False},
        "joint": {"backbone": True, "add_on": True, "prototypes": True, "last_layer": False},
        "last_layer": {"backbone": False, "add_on": False, "prototypes": False, "last_layer": True},
    }
    for stage, trainable in expected_trainable.items():
        assert set_stage(net, stage) == trainable
        before = {g["name"]: [p.detach().clone() for p in g["params"]] for g in groups}
        optimizer.zero_grad(set_to_none=True)
        logits = net(x)
        head.loss_terms(logits, y)["loss"].backward()
        optimizer.step()
        for g in groups:
            changed = any(not torch.equal(a, b) for a, b in zip(before[g["name"]], g["params"]))
            assert changed == trainable[g["name"]], (stage, g["name"])
    with pytest.raises(ValueError, match="Unknown stage"):
        set_stage(net, "warmup")
    with pytest.raises(ValueError, match="no PrototypeHead"):
        set_stage(nn.Linear(2, 2), "joint")
    with pytest.raises(ValueError, match="Unknown parameter group"):
        prototype_parameter_groups(net, {"head": 1.0})
