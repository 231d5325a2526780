"""MaskingModel: shapes, gradients, the paper's objective by hand, the paper's property on a hand-built
classifier; its explainer (config, weights file, one forward pass); MaskingModelTraining."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader

from lightning_xai.attribution import get_explainer
from lightning_xai.attribution.path import gaussian_blur
from lightning_xai.modules import MaskingModel, MaskingModelExplainer, MaskingModelTraining
from tests.helpers.data import tiny_rgb_loader
from tests.helpers.logs import read_tensorboard
from tests.helpers.models import QuadrantClassifier, checkerboard, tiny_cnn
from tests.helpers.training import trainer


def _clf() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)
    ).eval()


def test_mask_shape_range_and_gradients() -> None:
    clf = _clf()
    masker = MaskingModel(2, 3, in_channels=1, hidden=4)
    x = torch.rand(3, 1, 10, 12)
    mask = masker.explain(clf, x, torch.tensor([0, 1, 2]))
    assert mask.shape == (3, 1, 10, 12) and (mask >= 0).all() and (mask <= 1).all()
    loss = sum(masker.loss_terms(clf, x, mask, torch.tensor([0, 1, 2])).values())
    grads = torch.autograd.grad(loss, list(masker.parameters()), allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    # the class selector (initialised to ones: every class alike) changes the mask once it differs per class
    with torch.no_grad():
        masker.class_selector.weight.normal_()
    assert not torch.allclose(
        masker.explain(clf, x, torch.tensor([0, 0, 0])), masker.explain(clf, x, torch.tensor([1, 1, 1]))
    )


def test_loss_terms_by_hand() -> None:
    clf = _clf()
    masker = MaskingModel(
        2, 3, in_channels=1, area_weight=0.7, smooth_weight=2.0, destroy_weight=5.0, destroy_power=0.3, blur_sigma=1.0
    )
    x = torch.rand(2, 1, 4, 4)
    m = torch.rand(2, 1, 4, 4)
    y = torch.tensor([2, 0])
    alt = gaussian_blur(x, 1.0)
    keep = torch.softmax(clf(x * m + alt * (1 - m)), dim=1)
    removed = torch.softmax(clf(x * (1 - m) + alt * m), dim=1)
    preserve = -(keep[0, 2].log() + keep[1, 0].log()) / 2
    destroy = 5.0 * (removed[0, 2] ** 0.3 + removed[1, 0] ** 0.3) / 2
    horizontal = (
        sum((m[b, 0, i, j] - m[b, 0, i, j + 1]) ** 2 for b in range(2) for i in range(4) for j in range(3)) / 24
    )
    vertical = sum((m[b, 0, i, j] - m[b, 0, i + 1, j]) ** 2 for b in range(2) for i in range(3) for j in range(4)) / 24
    terms = masker.loss_terms(clf, x, m, y)
    torch.testing.assert_close(terms["preserve"], preserve)
    torch.testing.assert_close(terms["destroy"], destroy)
    torch.testing.assert_close(terms["area"], 0.7 * m.mean())
    torch.testing.assert_close(terms["smoothness"], 2.0 * (horizontal + vertical))
    # fill="mean": the removed pixels take each image's mean colour
    mean_fill = MaskingModel(2, 3, in_channels=1, fill="mean")
    mean = x.mean(dim=(2, 3), keepdim=True)
    keep_mean = torch.softmax(clf(x * m + mean * (1 - m)), dim=1)
    torch.testing.assert_close(
        mean_fill.loss_terms(clf, x, m, y)["preserve"], -(keep_mean[0, 2].log() + keep_mean[1, 0].log()) / 2
    )


def test_trained_mask_finds_the_only_region_the_classifier_looks_at() -> None:
    """The paper's property: the mask keeps the evidence. QuadrantClassifier only sees the top-left quadrant."""
    torch.manual_seed(0)
    clf = QuadrantClassifier().eval()
    masker = MaskingModel(
        1, 2, in_channels=1, layer="conv", hidden=8, area_weight=1.0, smooth_weight=0.5, blur_sigma=2.0
    )
    x = torch.rand(64, 1, 8, 8) * 0.5 + 0.25
    x[:32, :, :4, :4] += 0.2 * checkerboard()  # class 1: the checkerboard in the top-left quadrant
    x[32:, :, :4, :4] -= 0.2 * checkerboard()  # class 0: its inverse
    y = clf(x).argmax(dim=1)
    assert torch.equal(y, (torch.arange(64) < 32).long())
    opt = torch.optim.Adam(masker.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        features, _ = masker.classifier_features(clf, x)
        loss = sum(masker.loss_terms(clf, x, masker(x, features, y), y).values())
        loss.backward()
        opt.step()
    mask = MaskingModelExplainer(masker)(clf, x, y)
    inside = mask[:, :, :4, :4].mean()
    outside = (mask.sum() - mask[:, :, :4, :4].sum()) / (mask.numel() * 3 / 4)
    assert inside > 0.5 and outside < 0.25 and inside > 3 * outside, (float(inside), float(outside))


def test_explainer_config_weights_file_and_cost(tmp_path: Path) -> None:
    clf = _clf()
    masker = MaskingModel(2, 3, in_channels=1)
    x = torch.rand(4, 1, 8, 8)
    direct = MaskingModelExplainer(masker)(clf, x, 1)
    path = masker.save(tmp_path / "masker.pt")
    from_file = get_explainer("masking_model", weights=str(path))
    torch.testing.assert_close(from_file(clf, x, 1), direct)
    clone = pickle.loads(pickle.dumps(from_file))
    assert clone._loaded is None and clone.weights == str(path)
    torch.testing.assert_close(clone(clf, x, 1), direct)
    # cost: one classifier forward pass, no backward
    calls = []
    handle = clf.register_forward_hook(lambda m, a, o: calls.append(o.shape[0]))
    MaskingModelExplainer(masker)(clf, x, None)
    handle.remove()
    assert calls == [4]
    assert masker.training  # the explainer restored the masker's mode
    with pytest.raises(ValueError, match="masker="):
        MaskingModelExplainer()(clf, x, 0)
    with pytest.raises(ValueError, match="no masking-model file"):
        MaskingModelExplainer(weights=str(tmp_path / "absent.pt"))(clf, x, 0)
    with pytest.raises(TypeError, match="MaskingModel"):
        MaskingModelExplainer(masker=nn.Linear(2, 2))


def test_bad_inputs() -> None:
    clf = _clf()
    with pytest.raises(ValueError, match=r"2 output channels.*feature_channels=5"):
        MaskingModelExplainer(MaskingModel(5, 3, in_channels=1))(clf, torch.rand(2, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="in_channels=3"):
        MaskingModel(2, 3, in_channels=3).explain(clf, torch.rand(2, 1, 8, 8))
    with pytest.raises(ValueError, match="'0'"):
        MaskingModelExplainer(MaskingModel(2, 3, in_channels=1, layer="conv9"))(clf, torch.rand(2, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="eval mode"):
        MaskingModelTraining(clf.train(), MaskingModel(2, 3, in_channels=1))
    with pytest.raises(ValueError, match="blur_sigma"):
        MaskingModel(2, 3, blur_sigma=0.0)


def _loader() -> DataLoader:
    loader = tiny_rgb_loader()
    return loader


def test_fit_freezes_classifier_logs_and_round_trips(tmp_path: Path) -> None:
    clf = tiny_cnn().eval()
    clf_state = {k: v.clone() for k, v in clf.state_dict().items()}
    module = MaskingModelTraining(clf, MaskingModel(8, 3, hidden=4), lr=0.01)
    before = {k: v.clone() for k, v in module.masker.state_dict().items()}
    logger = TensorBoardLogger(str(tmp_path), name="masking")
    fit = trainer(tmp_path, max_epochs=2, logger=logger)
    fit.fit(module, _loader(), tiny_rgb_loader(seed=1))
    logger.finalize("success")
    assert not clf.training
    assert all(torch.equal(v, clf_state[k]) for k, v in clf.state_dict().items()), "the classifier changed"
    assert any(not torch.equal(v, before[k]) for k, v in module.masker.state_dict().items()), "the masker did not train"
    accs = read_tensorboard(logger.log_dir)
    assert sum(len(a.Images("xai/masking/masks")) for a in accs if "xai/masking/masks" in a.Tags()["images"]) == 2
    scalars = {t for a in accs for t in a.Tags()["scalars"]}
    assert {"train/preserve", "train/destroy", "train/area", "train/smoothness", "val/loss"} <= scalars
    path = tmp_path / "m.ckpt"
    fit.save_checkpoint(path)
    restored = MaskingModelTraining(tiny_cnn().eval(), MaskingModel(8, 3, hidden=4))
    restored.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    for (k, v), (k2, v2) in zip(module.state_dict().items(), restored.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(restored(x), module(x))


@pytest.mark.ddp
@pytest.mark.slow
def test_fit_under_ddp_spawn(tmp_path: Path) -> None:
    module = MaskingModelTraining(tiny_cnn().eval(), MaskingModel(8, 3, hidden=4), lr=0.01, render_every_n_epochs=0)
    before = module.masker.decoder[2].weight.clone()
    trainer(tmp_path, strategy="ddp_spawn", devices=2).fit(module, tiny_rgb_loader())
    assert not torch.equal(module.masker.decoder[2].weight, before)


def test_saliency_monitor_logs_the_masking_model(tmp_path: Path) -> None:
    from lightning_xai.callbacks import SaliencyMonitor
    from tests.helpers.training import fit

    masker = MaskingModel(8, 3, in_channels=3, hidden=4)  # matches tests.helpers.lightning_modules.tiny_model(3)
    logger = TensorBoardLogger(str(tmp_path), name="monitor")
    monitor = SaliencyMonitor(explainers=[MaskingModelExplainer(masker)], num_samples=3, synchronous_logging=True)
    fit(tmp_path, [monitor], logger=logger, max_epochs=1)
    tags = {t for a in read_tensorboard(logger.log_dir) for t in a.Tags()["images"]}
    assert any("masking_model" in t for t in tags), tags
