"""SoftDecisionTree: paths and leaves against a literal per-sample, per-node reference; the paper's loss
and balanced-split penalty by hand; TreeDistillation: bad teachers, checkpoints, DDP, the picture."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.modules import MAX_TREE_DEPTH, SoftDecisionTree, TreeDistillation
from lightning_xai.render.tree import render_tree
from tests.helpers.data import tiny_image_loader
from tests.helpers.logs import read_tensorboard
from tests.helpers.models import SoftmaxTeacher, TinyTeacher, TupleTeacher
from tests.helpers.training import trainer


def _literal_paths(tree: SoftDecisionTree, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leaf path probabilities, node reach probabilities and right-branch probabilities, one sample,
    one node at a time, straight from the paper's definitions."""
    w, b, beta = tree.inner.weight, tree.inner.bias, tree.beta
    B, N, L = x.shape[0], tree.num_inner, tree.num_leaves
    p = torch.zeros(B, N, dtype=torch.float64)
    reach = torch.zeros(B, N, dtype=torch.float64)
    leaves = torch.zeros(B, L, dtype=torch.float64)
    for s in range(B):
        for i in range(N):
            p[s, i] = 1.0 / (1.0 + math.exp(-float(beta * (x[s] @ w[i] + b[i]))))
        for i in range(N):
            prob, node = 1.0, i
            while node > 0:  # walk up to the root
                parent = (node - 1) // 2
                prob *= p[s, parent] if node == 2 * parent + 2 else 1 - p[s, parent]
                node = parent
            reach[s, i] = prob
        for leaf in range(L):
            prob, node = 1.0, 0
            for level in range(tree.depth - 1, -1, -1):
                right = (leaf >> level) & 1
                prob *= p[s, node] if right else 1 - p[s, node]
                node = 2 * node + 1 + right
            leaves[s, leaf] = prob
    return leaves, reach, p


def _tree(depth: int = 3, in_features: int = 5, num_classes: int = 4, seed: int = 0) -> SoftDecisionTree:
    torch.manual_seed(seed)
    tree = SoftDecisionTree(in_features, num_classes, depth=depth, penalty_strength=0.3, init_beta=1.7)
    with torch.no_grad():
        tree.leaf_logits.normal_()
    return tree


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_paths_match_literal_definition_and_rows_sum_to_one(depth: int) -> None:
    tree = _tree(depth)
    x = torch.randn(6, 5)
    leaves, _, _ = _literal_paths(tree, x)
    paths = tree.path_probabilities(x)
    assert paths.shape == (6, 2**depth)
    torch.testing.assert_close(paths.double(), leaves, rtol=1e-5, atol=1e-6)
    out = tree.predict_proba(x)
    assert out.shape == (6, 4)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(6))
    assert (out >= 0).all()
    torch.testing.assert_close(tree.leaf_distributions().sum(dim=1), torch.ones(2**depth))
    mixture = leaves @ tree.leaf_logits.softmax(dim=1).double()
    torch.testing.assert_close(out.double(), mixture, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tree.log_proba(x).exp(), out, rtol=1e-5, atol=1e-6)
    # forward returns log-probabilities: logits for the library (their softmax is the mixture)
    torch.testing.assert_close(tree(x), tree.log_proba(x))
    torch.testing.assert_close(tree(x).softmax(dim=1), out, rtol=1e-5, atol=1e-6)


def test_max_path_prediction_is_the_argmax_of_the_most_probable_leaf() -> None:
    tree = _tree(3)
    x = torch.randn(7, 5)
    leaves, _, _ = _literal_paths(tree, x)
    best = leaves.argmax(dim=1)
    expected = tree.leaf_logits.argmax(dim=1)[best]
    assert torch.equal(tree.max_path_leaf(x), best)
    assert torch.equal(tree.predict(x), expected)
    assert torch.equal(tree.predict(x, mode="mixture"), tree(x).argmax(dim=1))
    with pytest.raises(ValueError, match="max_path"):
        tree.predict(x, mode="vote")


def test_depth_one_loss_terms_by_hand() -> None:
    tree = SoftDecisionTree(2, 2, depth=1, penalty_strength=0.5)
    with torch.no_grad():
        tree.inner.weight.copy_(torch.tensor([[1.0, -2.0]]))
        tree.inner.bias.fill_(0.5)
        tree.log_beta.fill_(math.log(2.0))
        tree.leaf_logits.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    y = torch.tensor([0, 1])
    p = torch.sigmoid(2.0 * torch.tensor([1 - 2 + 0.5, 0 + 2 + 0.5]))  # right-branch probability
    q_left = torch.tensor([2.0, 0.0]).softmax(0)
    q_right = torch.tensor([0.0, 1.0]).softmax(0)
    ce = [-(1 - p[s]) * q_left[y[s]].log() - p[s] * q_right[y[s]].log() for s in range(2)]
    alpha = p.mean()  # the root is reached with probability one
    terms = tree.loss_terms(x, y)
    torch.testing.assert_close(terms["classification"], (ce[0] + ce[1]) / 2)
    torch.testing.assert_close(terms["balance"], -0.5 * (0.5 * alpha.log() + 0.5 * (1 - alpha).log()))
    # soft targets: the same formula with T in place of the one-hot
    t = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    soft = [-(1 - p[s]) * (t[s] * q_left.log()).sum() - p[s] * (t[s] * q_right.log()).sum() for s in range(2)]
    torch.testing.assert_close(tree.loss_terms(x, t)["classification"], (soft[0] + soft[1]) / 2)
    # the forward pass, by hand
    torch.testing.assert_close(tree.predict_proba(x), (1 - p)[:, None] * q_left + p[:, None] * q_right)
    torch.testing.assert_close(tree(x), ((1 - p)[:, None] * q_left + p[:, None] * q_right).log())


def test_penalty_matches_the_papers_formula() -> None:
    tree = _tree(3)
    x = torch.randn(9, 5)
    _, reach, p = _literal_paths(tree, x)
    expected = 0.0
    for i in range(tree.num_inner):
        d = int(math.floor(math.log2(i + 1)))
        alpha = float((reach[:, i] * p[:, i]).sum() / reach[:, i].sum())
        expected += 2.0**-d * (0.5 * math.log(alpha) + 0.5 * math.log(1 - alpha))
    expected *= -0.3
    torch.testing.assert_close(
        tree.loss_terms(x, torch.zeros(9, dtype=torch.long))["balance"].double(),
        torch.tensor(expected, dtype=torch.float64),
        rtol=1e-5,
        atol=1e-7,
    )
    # a perfectly balanced tree (all nodes 50/50) costs the minimum: lambda * log(2) * sum_d 2^d 2^-d
    with torch.no_grad():
        tree.inner.weight.zero_()
        tree.inner.bias.zero_()
    torch.testing.assert_close(
        tree.loss_terms(x, torch.zeros(9, dtype=torch.long))["balance"], torch.tensor(0.3 * math.log(2) * 3)
    )


def test_gradients_reach_every_parameter() -> None:
    tree = _tree(2)
    x = torch.randn(4, 5, requires_grad=True)
    loss = sum(tree.loss_terms(x, torch.tensor([0, 1, 2, 3])).values())
    grads = torch.autograd.grad(loss, [x, *tree.parameters()])
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=rf"largest depth allowed is {MAX_TREE_DEPTH}"):
        SoftDecisionTree(4, 2, depth=MAX_TREE_DEPTH + 1)
    with pytest.raises(ValueError, match="depth"):
        SoftDecisionTree(4, 2, depth=0)
    with pytest.raises(TypeError, match="depth"):
        SoftDecisionTree(4, 2, depth=2.0)
    with pytest.raises(ValueError, match="init_beta"):
        SoftDecisionTree(4, 2, init_beta=0.0)
    tree = SoftDecisionTree(4, 3, depth=2)
    with pytest.raises(ValueError, match=r"expected 4 input features.*got 5"):
        tree(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        tree.loss_terms(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="distributions"):
        tree.loss_terms(torch.randn(2, 4), torch.rand(2, 4))
    # an image batch with the right number of elements is flattened
    assert tree(torch.randn(2, 1, 2, 2)).shape == (2, 3)


def test_state_dict_round_trip() -> None:
    tree, other = _tree(3), _tree(3, seed=1)
    other.load_state_dict(tree.state_dict())
    x = torch.randn(3, 5)
    torch.testing.assert_close(other(x), tree(x))
    assert set(tree.state_dict()) == {"inner.weight", "inner.bias", "log_beta", "leaf_logits"}


def test_render_tree_highlights_a_path() -> None:
    tree = _tree(2, in_features=16)
    x = torch.rand(1, 16)
    img = render_tree(tree.inner.weight, tree.leaf_distributions(), (4, 4), tree.path_probabilities(x)[0], x.view(4, 4))
    assert img.shape[0] == 3 and img.min() >= 0 and img.max() <= 1
    red = (img[0] > 0.7) & (img[1] < 0.3) & (img[2] < 0.3)
    plain = render_tree(tree.inner.weight, tree.leaf_distributions(), (4, 4))
    red_plain = (plain[0] > 0.7) & (plain[1] < 0.3) & (plain[2] < 0.3)
    assert red.sum() > red_plain.sum() + 100  # the highlighted path adds red edges and frames
    with pytest.raises(ValueError, match="image_shape"):
        render_tree(tree.inner.weight, tree.leaf_distributions(), (5, 5))


# --- TreeDistillation --------------------------------------------------------------------------
def test_distillation_rejects_bad_teachers(tmp_path: Path) -> None:
    tree = SoftDecisionTree(16, 3, depth=2)
    with pytest.raises(ValueError, match="eval mode"):
        TreeDistillation(TinyTeacher().train(), tree)
    with pytest.raises(ValueError, match="teacher"):
        TreeDistillation(None, tree, mode="soft")
    with pytest.raises(ValueError, match="temperature"):
        TreeDistillation(TinyTeacher().eval(), tree, temperature=0.0)
    with pytest.raises(ValueError, match="mode"):
        TreeDistillation(TinyTeacher().eval(), tree, mode="both")
    with pytest.raises(TypeError, match="SoftDecisionTree"):
        TreeDistillation(TinyTeacher().eval(), torch.nn.Linear(16, 3))
    for teacher, match in [
        (SoftmaxTeacher(), "probabilities"),
        (TupleTeacher(), "tuple"),
        (TinyTeacher(4), r"\[B, 3\]"),
    ]:
        module = TreeDistillation(teacher.eval(), SoftDecisionTree(16, 3, depth=2))
        before = module.tree.inner.weight.clone()
        with pytest.raises(ValueError, match=match):
            trainer(tmp_path, max_steps=1).fit(module, tiny_image_loader())
        assert torch.equal(module.tree.inner.weight, before)  # failed before any optimiser step


def test_soft_targets_use_the_temperature() -> None:
    teacher = TinyTeacher().eval()
    module = TreeDistillation(teacher, SoftDecisionTree(16, 3, depth=2), temperature=3.0)
    x = torch.rand(4, 1, 4, 4)
    torch.testing.assert_close(module._targets(x, torch.zeros(4)), (teacher(x) / 3.0).softmax(dim=1))
    hard = TreeDistillation(None, SoftDecisionTree(16, 3, depth=2), mode="hard")
    y = torch.tensor([0, 1, 2, 0])
    assert torch.equal(hard._targets(x, y), y)


def test_fit_keeps_teacher_frozen_logs_tree_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = TinyTeacher().eval()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = TreeDistillation(teacher, SoftDecisionTree(16, 3, depth=2), temperature=2.0, lr=0.05)
    tree_before = module.tree.inner.weight.clone()
    logger = TensorBoardLogger(str(tmp_path), name="tree")
    fit = trainer(tmp_path, max_epochs=2, logger=logger, enable_checkpointing=False)
    fit.fit(module, tiny_image_loader(), tiny_image_loader(seed=1))
    logger.finalize("success")
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), "the teacher changed"
    assert not torch.equal(module.tree.inner.weight, tree_before), "the tree did not train"
    accs = read_tensorboard(logger.log_dir)
    images = [e for acc in accs if "xai/tree/structure" in acc.Tags()["images"] for e in acc.Images("xai/tree/structure")]
    assert len(images) == 2
    scalars = {t for acc in accs for t in acc.Tags()["scalars"]}
    assert {"val/fidelity", "val/acc", "val/acc_max_path", "train/balance", "train/classification"} <= scalars

    path = tmp_path / "tree.ckpt"
    fit.save_checkpoint(path)
    restored = TreeDistillation(TinyTeacher().eval(), SoftDecisionTree(16, 3, depth=2))
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for (k, v), (k2, v2) in zip(module.state_dict().items(), restored.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.rand(3, 1, 4, 4)
    torch.testing.assert_close(restored(x), module(x))


@pytest.mark.ddp
@pytest.mark.slow
def test_hard_label_fit_under_ddp_spawn(tmp_path: Path) -> None:
    module = TreeDistillation(None, SoftDecisionTree(16, 3, depth=2), mode="hard", lr=0.05, render_every_n_epochs=0)
    before = module.tree.leaf_logits.clone()
    trainer(tmp_path, strategy="ddp_spawn", devices=2).fit(module, tiny_image_loader())
    assert not torch.equal(module.tree.leaf_logits, before)  # rank zero's trained weights came back


def test_render_deep_tree_draws_the_subtree_of_the_path() -> None:
    tree = _tree(4, in_features=16)
    x = torch.rand(1, 16)
    path = tree.path_probabilities(x)[0]
    cut = render_tree(tree.inner.weight, tree.leaf_distributions(), (4, 4), max_depth=2)
    subtree = render_tree(tree.inner.weight, tree.leaf_distributions(), (4, 4), path, max_depth=2)
    # with a path the bottom levels are drawn down to the leaves: one row more than the cut tree
    assert subtree.shape[1] > cut.shape[1]
