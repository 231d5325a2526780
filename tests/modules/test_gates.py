"""ClassSpecificGates by hand; the alternating recipe (ClassSpecificGateTraining): paths, projection,
per-epoch schedule, logging, checkpoints, DDP. The four behaviours of the authors' code (CSGCNN,
VOCPart/train/resnet_std.py LearnableMaskLayer and train.py) each have a test: row-max projection,
hinge L1 penalty, initial 0.5, per-epoch alternation after warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.modules import ClassSpecificGates, ClassSpecificGateTraining
from lightning_xai.render.gates import render_gate_matrix
from tests.helpers.data import tiny_rgb_loader
from tests.helpers.logs import read_tensorboard
from tests.helpers.models import tiny_cnn
from tests.helpers.training import trainer


def _gates() -> ClassSpecificGates:
    gates = ClassSpecificGates(3, 2, sparsity=0.4)
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([[1.0, 0.0], [0.5, 0.25], [0.0, 1.0]]))
    return gates


def test_gated_path_by_hand_and_standard_path_is_identity() -> None:
    gates = _gates()
    features = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    out = gates(features, torch.tensor([0, 1]))
    expected = features.clone()
    expected[0, 0] *= 1.0
    expected[0, 1] *= 0.5
    expected[0, 2] *= 0.0
    expected[1, 0] *= 0.0
    expected[1, 1] *= 0.25
    expected[1, 2] *= 1.0
    torch.testing.assert_close(out, expected)
    assert gates(features) is features
    # vectors [B, K] too
    torch.testing.assert_close(gates(torch.ones(1, 3), torch.tensor([1])), torch.tensor([[0.0, 0.25, 1.0]]))


def test_initial_gates_are_one_half() -> None:
    assert torch.equal(ClassSpecificGates(3, 2).gate, torch.full((3, 2), 0.5))


def test_hinge_sparsity_is_zero_below_the_budget_and_linear_above() -> None:
    gates = ClassSpecificGates(3, 2, sparsity=0.4, budget=0.5)  # budget 0.5 * 6 = 3 units of gate mass
    torch.testing.assert_close(gates.loss_terms()["sparsity"], torch.tensor(0.0))  # |G|_1 = 3: at the budget
    values, expected = [], []
    for fill in (0.1, 0.4, 0.6, 0.8, 1.0):
        with torch.no_grad():
            gates.gate.fill_(fill)
        values.append(gates.loss_terms()["sparsity"])
        expected.append(torch.tensor(0.4 * max(6 * fill - 3, 0.0)))
    torch.testing.assert_close(torch.stack(values), torch.stack(expected))
    # the gradient is lambda_2 * sign(G) above the budget and zero below it
    (grad,) = torch.autograd.grad(gates.loss_terms()["sparsity"], gates.gate)
    torch.testing.assert_close(grad, torch.full((3, 2), 0.4))
    with torch.no_grad():
        gates.gate.fill_(0.2)
    (grad,) = torch.autograd.grad(gates.loss_terms()["sparsity"], gates.gate)
    assert torch.equal(grad, torch.zeros(3, 2))
    # the hand case of the module's gates: |G|_1 = 2.75 against the authors' budget 0.2 * 6 = 1.2
    torch.testing.assert_close(_gates().loss_terms()["sparsity"], torch.tensor(0.4 * (2.75 - 1.2)))


def test_projection_divides_each_row_by_its_max_then_clamps() -> None:
    gates = _gates()
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([[1.7, 0.85], [0.2, -0.3], [0.0, 0.0]]))
    gates.project_()
    # row 0 / 1.7; row 1 / 0.2 then clamped; row 2 (closed for every class) reopens instead of 0/0
    torch.testing.assert_close(gates.gate.detach(), torch.tensor([[1.0, 0.5], [1.0, 0.0], [1.0, 1.0]]))
    assert torch.equal(gates.assignment(), torch.tensor([0, 0, 0]))
    torch.testing.assert_close(gates.density(0.1), torch.tensor(5 / 6))
    # after an optimiser step on the gated loss every filter's max over the classes is 1 (clamp alone
    # leaves rows that shrank below 1, and lets a row reach 0 for every class)
    torch.manual_seed(0)
    gates = ClassSpecificGates(6, 3, sparsity=1.0)
    opt = torch.optim.SGD(gates.parameters(), lr=0.3)
    feats = torch.rand(4, 6, 2, 2)
    loss = gates(feats, torch.tensor([0, 1, 2, 0])).mean() + gates.loss_terms()["sparsity"]
    loss.backward()
    opt.step()
    clamped = gates.gate.detach().clamp(0, 1)
    assert not torch.allclose(clamped.amax(dim=1), torch.ones(6))  # the broken projection
    gates.project_()
    torch.testing.assert_close(gates.gate.detach().amax(dim=1), torch.ones(6))
    assert gates.gate.min() >= 0


def test_gradients_reach_only_the_labels_columns() -> None:
    gates = ClassSpecificGates(4, 3)
    features = torch.rand(2, 4, 3, 3, requires_grad=True)
    out = gates(features, torch.tensor([0, 2]))
    g_gate, g_feat = torch.autograd.grad(out.sum(), [gates.gate, features])
    assert g_gate[:, 1].abs().sum() == 0 and g_gate[:, 0].abs().sum() > 0 and g_gate[:, 2].abs().sum() > 0
    torch.testing.assert_close(g_gate[:, 0], features[0].sum(dim=(1, 2)).detach())
    assert torch.isfinite(g_feat).all()


def test_alternation_is_per_epoch_after_warmup(tmp_path: Path) -> None:
    module = ClassSpecificGateTraining(
        tiny_cnn(), ClassSpecificGates(8, 3), lr=0.05, warmup_epochs=2, period=3, gated_from=1,
        render_every_n_epochs=0,
    )
    assert [module.uses_gated_path(e) for e in range(8)] == [False, False, True, False, True, True, False, True]
    seen: list[tuple[int, bool, bool]] = []  # (epoch, gates moved, network moved) per epoch

    class Watch(pl.Callback):
        def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            self.gate = pl_module.gates.gate.detach().clone()
            self.fc = pl_module.model.fc.weight.detach().clone()

        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            moved = not torch.equal(pl_module.gates.gate, self.gate)
            seen.append((trainer.current_epoch, moved, not torch.equal(pl_module.model.fc.weight, self.fc)))

    torch.manual_seed(0)
    trainer(tmp_path, max_epochs=5, callbacks=[Watch()]).fit(module, tiny_rgb_loader())
    # as in the authors' train.py the cycle is counted on the absolute epoch (e % period >= gated_from):
    # epochs 0, 1 warm up, 2 is gated, 3 standard, 4 gated. The gates move in the gated epochs only, the
    # network in every epoch; every gated step ends projected
    assert seen == [(0, False, True), (1, False, True), (2, True, True), (3, False, True), (4, True, True)]
    torch.testing.assert_close(module.gates.gate.detach().amax(dim=1), torch.ones(8))
    opt_standard, opt_gated = module.optimizers()
    assert not any(p is module.gates.gate for g in opt_standard.param_groups for p in g["params"])
    assert module.gates.gate in opt_gated.state and module.model.fc.weight in opt_standard.state


def test_bad_inputs() -> None:
    gates = ClassSpecificGates(4, 3)
    with pytest.raises(ValueError, match="channels=4"):
        gates(torch.rand(2, 5, 3, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        gates(torch.rand(2, 4, 3, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="labels"):
        gates(torch.rand(2, 4, 3, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="init"):
        ClassSpecificGates(4, 3, init=1.5)
    with pytest.raises(ValueError, match=r"8 output channels.*ClassSpecificGates\(8, 3\)"):
        ClassSpecificGateTraining(tiny_cnn(width=4), ClassSpecificGates(5, 3))
    with pytest.raises(ValueError, match="features.6"):
        ClassSpecificGateTraining(tiny_cnn(width=4), ClassSpecificGates(8, 3), layer="features.60")
    with pytest.raises(ValueError, match="gated_from"):
        ClassSpecificGateTraining(tiny_cnn(width=4), ClassSpecificGates(8, 3), period=2, gated_from=2)
    with pytest.raises(ValueError, match="budget"):
        ClassSpecificGates(4, 3, budget=1.5)


def test_training_module_paths() -> None:
    module = ClassSpecificGateTraining(tiny_cnn(), ClassSpecificGates(8, 3, init=1.0))
    assert module.layer == "features.6"
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    module.eval()
    torch.testing.assert_close(module.gated_forward(x, y), module(x))  # all gates open: same as standard
    with torch.no_grad():
        module.gates.gate.zero_()
    closed = module.gated_forward(x, y)
    # every filter closed: the head sees zeros, the logits are the bias
    torch.testing.assert_close(closed, module.model.fc.bias.expand(4, 3))
    assert not torch.allclose(module(x), closed)  # the standard path does not use the gates


def test_fit_projects_logs_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = ClassSpecificGateTraining(
        tiny_cnn(), ClassSpecificGates(8, 3, sparsity=0.5), lr=0.05, warmup_epochs=0, period=2
    )  # epoch 0 standard, epoch 1 gated
    logger = TensorBoardLogger(str(tmp_path), name="gates")
    fit = trainer(tmp_path, max_epochs=2, logger=logger)
    fit.fit(module, tiny_rgb_loader(), tiny_rgb_loader(seed=1))
    logger.finalize("success")
    gate = module.gates.gate.detach()
    assert gate.min() >= 0 and gate.max() <= 1 and not torch.equal(gate, torch.full_like(gate, 0.5))
    accs = read_tensorboard(logger.log_dir)
    assert sum(len(a.Images("xai/gates/assignment")) for a in accs if "xai/gates/assignment" in a.Tags()["images"]) == 2
    scalars = {t for a in accs for t in a.Tags()["scalars"]}
    assert {"xai/gates/density", "xai/gates/l1", "train/sparsity", "train/loss_gated", "train/loss_standard"} <= scalars
    path = tmp_path / "g.ckpt"
    fit.save_checkpoint(path)
    restored = ClassSpecificGateTraining(tiny_cnn(), ClassSpecificGates(8, 3))
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for (k, v), (k2, v2) in zip(module.state_dict().items(), restored.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 2])
    module.eval(), restored.eval()
    torch.testing.assert_close(restored.gated_forward(x, y), module.gated_forward(x, y))


@pytest.mark.ddp
@pytest.mark.slow
def test_fit_under_ddp_spawn(tmp_path: Path) -> None:
    module = ClassSpecificGateTraining(
        tiny_cnn(), ClassSpecificGates(8, 3, sparsity=0.5), lr=0.05, warmup_epochs=0, period=2,
        render_every_n_epochs=0,
    )
    trainer(tmp_path, strategy="ddp_spawn", devices=2, max_epochs=2).fit(module, tiny_rgb_loader())
    assert not torch.equal(module.gates.gate, torch.full((8, 3), 0.5))  # rank zero's trained gates came back


def test_render_gate_matrix() -> None:
    img = render_gate_matrix(torch.rand(8, 3), ["a", "b", "c"], title="t")
    assert img.shape[0] == 3 and 0 <= img.min() and img.max() <= 1
    with pytest.raises(ValueError, match="names"):
        render_gate_matrix(torch.rand(8, 3), ["a"])
