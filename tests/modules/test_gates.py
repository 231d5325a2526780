"""ClassSpecificGates by hand; the alternating recipe (ClassSpecificGateTraining): paths, projection,
logging, checkpoints, DDP."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_xai.modules import ClassSpecificGates, ClassSpecificGateTraining
from lightning_xai.render.gates import render_gate_matrix
from tests.modules.helpers import read_tensorboard, tiny_cnn, tiny_rgb_loader, trainer


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


def test_sparsity_term_by_hand_and_projection() -> None:
    gates = _gates()
    torch.testing.assert_close(gates.loss_terms()["sparsity"], torch.tensor(0.4 * (1 + 0.5 + 0.25 + 1) / 6))
    with torch.no_grad():
        gates.gate[0, 0] = 1.7
        gates.gate[1, 1] = -0.3
    gates.project_()
    assert gates.gate.min() == 0.0 and gates.gate.max() == 1.0
    assert torch.equal(gates.assignment(), torch.tensor([0, 0, 1]))
    torch.testing.assert_close(gates.density(0.1), torch.tensor(3 / 6))


def test_gradients_reach_only_the_labels_columns() -> None:
    gates = ClassSpecificGates(4, 3)
    features = torch.rand(2, 4, 3, 3, requires_grad=True)
    out = gates(features, torch.tensor([0, 2]))
    g_gate, g_feat = torch.autograd.grad(out.sum(), [gates.gate, features])
    assert g_gate[:, 1].abs().sum() == 0 and g_gate[:, 0].abs().sum() > 0 and g_gate[:, 2].abs().sum() > 0
    torch.testing.assert_close(g_gate[:, 0], features[0].sum(dim=(1, 2)).detach())
    assert torch.isfinite(g_feat).all()


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
    module = ClassSpecificGateTraining(tiny_cnn(), ClassSpecificGates(8, 3, sparsity=0.5), lr=0.05)
    logger = TensorBoardLogger(str(tmp_path), name="gates")
    fit = trainer(tmp_path, max_epochs=2, logger=logger)
    fit.fit(module, tiny_rgb_loader(), tiny_rgb_loader(seed=1))
    logger.finalize("success")
    gate = module.gates.gate.detach()
    assert gate.min() >= 0 and gate.max() <= 1 and gate.min() < 1  # moved, stayed in [0, 1]
    accs = read_tensorboard(logger.log_dir)
    assert sum(len(a.Images("gates/assignment")) for a in accs if "gates/assignment" in a.Tags()["images"]) == 2
    scalars = {t for a in accs for t in a.Tags()["scalars"]}
    assert {"gates/density", "gates/l1", "train/sparsity", "train/loss_gated", "train/loss_standard"} <= scalars
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
        tiny_cnn(), ClassSpecificGates(8, 3, sparsity=0.5), lr=0.05, render_every_n_epochs=0
    )
    trainer(tmp_path, strategy="ddp_spawn", devices=2).fit(module, tiny_rgb_loader())
    assert module.gates.gate.min() < 1.0  # rank zero's trained gates came back


def test_render_gate_matrix() -> None:
    img = render_gate_matrix(torch.rand(8, 3), ["a", "b", "c"], title="t")
    assert img.shape[0] == 3 and 0 <= img.min() and img.max() <= 1
    with pytest.raises(ValueError, match="names"):
        render_gate_matrix(torch.rand(8, 3), ["a"])
