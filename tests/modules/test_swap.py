"""swap_head: wiring per architecture (checked against the head run on the right feature map), errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import DenseNet, ResNet
from torchvision.models.resnet import BasicBlock

from lightning_xai.modules import PrototypeHead, find_head, swap_head
from tests.helpers.models import SmallCNN, VGGish


def tiny_resnet(num_classes: int = 3) -> ResNet:
    torch.manual_seed(0)
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes).eval()


def tiny_densenet(num_classes: int = 3) -> DenseNet:
    torch.manual_seed(0)
    return DenseNet(growth_rate=4, block_config=(1, 1), num_init_features=8, bn_size=2, num_classes=num_classes).eval()


def head_for(channels: int) -> PrototypeHead:
    torch.manual_seed(1)
    return PrototypeHead(channels, num_classes=3, prototypes_per_class=2, prototype_dim=4)


def resnet_features(net: ResNet, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def test_resnet_feature_map_head() -> None:
    net, x = tiny_resnet(), torch.rand(2, 3, 32, 32)
    expected_features = resnet_features(net, x)
    head = head_for(512)
    assert swap_head(net, head) is net
    assert isinstance(net.fc, nn.Identity) and net.avgpool is head
    torch.testing.assert_close(net(x), head(expected_features))


def test_resnet_vector_head_replaces_fc() -> None:
    net, x = tiny_resnet(), torch.rand(2, 3, 32, 32)
    linear = nn.Linear(512, 5)
    swap_head(net, linear)
    assert net.fc is linear and isinstance(net.avgpool, nn.AdaptiveAvgPool2d)
    assert net(x).shape == (2, 5)


def test_vgg_style_head_gets_features() -> None:
    torch.manual_seed(0)
    net, x = VGGish(3, 3).eval(), torch.rand(2, 3, 16, 16)
    features = net.features(x)
    head = head_for(16)
    swap_head(net, head)
    assert isinstance(net.classifier, nn.Identity)
    torch.testing.assert_close(net(x), head(features))


def test_densenet_head_gets_relu_features_exactly() -> None:
    net, x = tiny_densenet(), torch.rand(2, 3, 32, 32)
    features = torch.relu(net.features(x))
    head = head_for(net.classifier.in_features)
    swap_head(net, head)
    expected = head(features)
    torch.testing.assert_close(net(x), expected, rtol=0, atol=0)
    assert net(x).shape == (2, 3)


def test_named_slots_and_gradient_reaches_backbone() -> None:
    torch.manual_seed(0)
    net, x = SmallCNN(1, 3).eval(), torch.rand(2, 1, 12, 12)
    head = head_for(16)
    swap_head(net, head, at=["pool", "dropout", "fc"])
    torch.testing.assert_close(net(x), head(net.features(x)))
    net(x)[:, 0].sum().backward()  # (the sum over classes has zero gradient: columns of 1, -0.5, -0.5)
    assert net.features[0].weight.grad is not None and net.features[0].weight.grad.abs().sum() > 0
    assert head.prototypes.grad is not None and head.prototypes.grad.abs().sum() > 0


def test_inside_a_lightning_module() -> None:
    import pytorch_lightning as pl

    class Lit(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = tiny_resnet()
            self.loss = nn.CrossEntropyLoss()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

    lit = Lit()
    assert find_head(lit) == ("model", ["avgpool", "fc"])
    head = head_for(512)
    swap_head(lit, head)
    assert lit.model.avgpool is head and lit(torch.rand(1, 3, 32, 32)).shape == (1, 3)


def test_errors() -> None:
    with pytest.raises(ValueError, match="no recognisable classifier head.*at="):
        swap_head(nn.Sequential(nn.Conv2d(3, 4, 3)), head_for(4))
    with pytest.raises(ValueError, match="in_channels=8.*512 channels"):
        swap_head(tiny_resnet(), PrototypeHead(8, 3, 1, 4))
    with pytest.raises(ValueError, match="in_features=7.*512"):
        swap_head(tiny_resnet(), nn.Linear(7, 3))
    with pytest.raises(ValueError, match="in_channels=5.*16"):
        swap_head(SmallCNN(1, 3), PrototypeHead(5, 3, 1, 4), at="pool")
    with pytest.raises(ValueError, match="'nope'"):
        swap_head(SmallCNN(1, 3), head_for(16), at=["pool", "nope"])
    with pytest.raises(TypeError, match="`at`"):
        swap_head(SmallCNN(1, 3), head_for(16), at=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`head`"):
        swap_head(SmallCNN(1, 3), "fc")  # type: ignore[arg-type]
    two = nn.ModuleDict({"a": tiny_resnet(), "b": tiny_resnet()})
    with pytest.raises(ValueError, match="several classifier heads"):
        swap_head(two, head_for(512))


def test_small_cnn_with_dropout_between_pool_and_fc() -> None:
    from lightning_xai.demo import ShapesClassifier

    torch.manual_seed(0)
    net, x = ShapesClassifier(num_classes=3, width=4, dropout=0.5), torch.rand(2, 3, 16, 16)
    assert find_head(net) == ("", ["pool", "dropout", "fc"])
    head = head_for(8)
    swap_head(net, head)  # training mode: a dropout left on the logits would make this differ
    assert isinstance(net.dropout, nn.Identity) and isinstance(net.fc, nn.Identity)
    torch.testing.assert_close(net(x), head(net.features(x)))
    vector = ShapesClassifier(num_classes=3, width=4)
    swap_head(vector, nn.Linear(8, 3))
    assert isinstance(vector.dropout, nn.Dropout)  # a vector head keeps the dropout before it


def test_modules_do_not_import_lightning() -> None:
    import subprocess
    import sys

    code = (
        "import sys, lightning_xai.modules, lightning_xai.render.prototypes; "
        "assert 'pytorch_lightning' not in sys.modules and 'lightning' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
