"""PatternNet / PatternAttribution: the paper's linear toy, the estimator's sums, patterns from files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_xai.attribution import PatternAttribution, PatternNet, Saliency, estimate_patterns
from lightning_xai.attribution.propagation import PatternStatistics, get_patterns, set_patterns

SIGNAL = torch.tensor([1.0, 0.0])  # a_s: the signal direction
DISTRACTOR = torch.tensor([1.0, 1.0])  # a_d: the distractor direction
FILTER = torch.tensor([1.0, -1.0])  # w: cancels the distractor, w^T a_s = 1


def toy_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Kindermans et al. 2018, section 2: x = a_s y + a_d eps with y, eps independent."""
    gen = torch.Generator().manual_seed(seed)
    y, eps = torch.randn(n, generator=gen), torch.randn(n, generator=gen)
    return y[:, None] * SIGNAL + eps[:, None] * DISTRACTOR, y


def toy_model() -> nn.Module:
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(FILTER)
    return model.eval()


def _cos_rows(a: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, direction.expand_as(a), dim=1).abs()


def test_toy_patternnet_recovers_signal_and_gradient_the_filter() -> None:
    model = toy_model()
    x, _ = toy_data(4096)
    patterns = estimate_patterns(model, x.split(512))
    for regime in ("a_plus", "a_minus"):
        torch.testing.assert_close(patterns[""][regime][0], SIGNAL, atol=0.05, rtol=0)
    x_test, y_test = toy_data(16, seed=1)
    signal = PatternNet(patterns)(model, x_test, 0)
    assert _cos_rows(signal, SIGNAL).min() > 0.995, "PatternNet must point along the signal direction"
    torch.testing.assert_close(signal[:, 0], y_test, atol=0.05 * y_test.abs().max(), rtol=0)  # s = a_s y
    gradient = Saliency(abs=False)(model, x_test, 0)
    torch.testing.assert_close(gradient, FILTER.expand_as(gradient))  # the gradient is the filter
    assert _cos_rows(gradient, SIGNAL).max() < 0.75, "the filter is not the signal direction"
    attribution = PatternAttribution(patterns)(model, x_test, 0)  # (w * a) y, a = a+ or a- by the sign of y
    a = torch.where((y_test > 0)[:, None], patterns[""]["a_plus"], patterns[""]["a_minus"])
    torch.testing.assert_close(attribution, FILTER * a * y_test[:, None])


def _literal_patterns(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, positive: bool) -> torch.Tensor:
    """a = cov(x, y) / (w^T cov(x, y)) over the samples of one regime, one output unit at a time."""
    rows = []
    for j in range(y.shape[1]):
        keep = y[:, j] > 0 if positive else y[:, j] <= 0
        xs, ys = x[keep].double(), y[keep, j].double()
        cov = (xs * ys[:, None]).mean(0) - xs.mean(0) * ys.mean()
        rows.append(cov / (w[j].double() @ cov))
    return torch.stack(rows).float()


def test_statistics_match_literal_covariances_linear_and_conv() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    x = torch.randn(300, 5)
    stats = PatternStatistics()
    for chunk in x.split(64):
        stats.update("fc", linear, chunk, linear(chunk))
    got = stats.patterns({"fc": linear})["fc"]
    with torch.no_grad():
        y = linear(x)
    for regime, positive in (("a_plus", True), ("a_minus", False)):
        torch.testing.assert_close(got[regime], _literal_patterns(x, y, linear.weight, positive), rtol=1e-4, atol=1e-5)

    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2)
    images = torch.randn(6, 2, 7, 7)
    conv_stats = PatternStatistics()
    conv_stats.update("conv", conv, images, conv(images))
    got = conv_stats.patterns({"conv": conv})["conv"]
    patches = F.unfold(images, 3, padding=1, stride=2).transpose(1, 2).reshape(-1, 18)  # every position a sample
    with torch.no_grad():
        out = conv(images).flatten(2).transpose(1, 2).reshape(-1, 3)
    w = conv.weight.reshape(3, -1)
    for regime, positive in (("a_plus", True), ("a_minus", False)):
        expected = _literal_patterns(patches, out, w, positive).view_as(conv.weight)
        torch.testing.assert_close(got[regime], expected, rtol=1e-4, atol=1e-5)


def test_patterns_from_file_dict_and_published(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3)).eval()
    patterns = estimate_patterns(model, [torch.randn(8, 1, 10, 10) for _ in range(4)])
    path = tmp_path / "patterns.pt"
    torch.save(patterns, path)
    x = torch.randn(3, 1, 10, 10)
    from_dict = PatternNet(patterns)(model, x, 1)
    torch.testing.assert_close(PatternNet(str(path))(model, x, 1), from_dict)
    with pytest.raises(ValueError, match="no patterns"):
        PatternNet()(model, x, 1)
    set_patterns(model, patterns)
    torch.testing.assert_close(PatternNet()(model, x, 1), from_dict)
    wrapper = nn.Sequential(model)  # the layers are found inside a wrapper too
    assert sorted(get_patterns(wrapper)) == ["0.0", "0.4"]
    torch.testing.assert_close(PatternNet()(wrapper, x, 1), from_dict)
    torch.testing.assert_close(PatternNet(patterns)(wrapper, x, 1), from_dict)  # dotted-suffix match


def test_two_component_differs_only_through_inactive_units() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).eval()
    patterns = estimate_patterns(model, [torch.randn(256, 4)])
    x = torch.randn(5, 4)
    both, plus_only = PatternNet(patterns)(model, x, 0), PatternNet(patterns, two_component=False)(model, x, 0)
    with torch.no_grad():
        score_positive = model(x)[:, 0] > 0
    # hidden units are gated by the ReLU; only the output unit's regime (sign of the score) matters
    torch.testing.assert_close(both[score_positive], plus_only[score_positive])


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="patterns"):
        PatternNet(patterns=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="two_component"):
        PatternAttribution(two_component="yes")  # type: ignore[arg-type]
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"no patterns for layers \['0'\]"):
        PatternNet({"other": {}})(model, torch.randn(1, 2), 0)


# --------------------------------------------------------------------------------------------
# BatchNorm: patterns of the merged layer
# --------------------------------------------------------------------------------------------
def _conv_bn_net() -> nn.Sequential:
    from tests.helpers.models import randomize_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 3),
    )
    randomize_batchnorm(net)
    with torch.no_grad():
        net[4].weight[::2] *= -1  # negative BatchNorm scales flip the merged layer's regimes
        net[1].bias += 0.3  # shifts move units between regimes
    return net.eval()


def _folded(net: nn.Sequential) -> nn.Sequential:
    """The equivalent net without BatchNorm: each conv carries the BatchNorm folded into it."""
    from lightning_xai.attribution.propagation import merged_parameters

    layers: list[nn.Module] = []
    for i, m in enumerate(net):
        if isinstance(m, nn.BatchNorm2d):
            continue
        if isinstance(m, nn.Conv2d) and isinstance(net[i + 1], nn.BatchNorm2d):
            w, b, _, _ = merged_parameters(m, net[i + 1])
            conv = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            m = conv
        layers.append(m)
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("cls", [PatternAttribution, PatternNet])
def test_batchnorm_is_merged_like_the_folded_net(cls: type) -> None:
    """Conv-BN-ReLU: patterns are estimated for the merged layer the explainer propagates through
    (statistics of the BatchNorm's output, normalised with the merged weight), so the map equals the
    one of the BatchNorm-folded equivalent net with its own estimated patterns."""
    net = _conv_bn_net()
    folded = _folded(net)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randn(64, 2, 6, 6, generator=gen) for _ in range(2)]
    x = torch.randn(5, 2, 6, 6, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), rtol=1e-5, atol=1e-5)
    ours, reference = estimate_patterns(net, batches), estimate_patterns(folded, batches)
    names = {"0": "0", "3": "2", "7": "5"}  # net layer -> folded layer
    for name, folded_name in names.items():
        for key in ("a_plus", "a_minus"):
            torch.testing.assert_close(ours[name][key], reference[folded_name][key], rtol=1e-4, atol=1e-5)
    target = torch.tensor([0, 1, 2, 0, 1])
    expected = cls(reference)(folded, x, target)
    got = cls(ours)(net, x, target)
    assert float((got - expected).abs().max() / expected.abs().max()) < 1e-4


def test_batchnorm_merged_in_the_estimator_callback_hooks() -> None:
    """PatternEstimator's statistics (updated with the merged BatchNorm, here from a model in
    training mode, whose BatchNorms use batch statistics in the forward) are those of the eval-mode
    merged layer: the same sums as the folded net's."""
    net = _conv_bn_net()
    folded = _folded(net)
    x = torch.randn(32, 2, 6, 6, generator=torch.Generator().manual_seed(2))
    stats, reference = PatternStatistics(), PatternStatistics()
    with torch.no_grad():
        reference.update("0", folded[0], x, folded[0](x))
        net.train()  # a training-mode BatchNorm: the merge still uses the running statistics
        conv_out = net[0](x)
        stats.update("0", net[0], x, conv_out, net[1])  # the conv's forward hook runs before the BatchNorm
        net[1](conv_out)
    # Tolerance from float32 and the computation's length: y differs by rounding (folded conv vs
    # conv then affine: a dot product of fan_in terms), and each sum adds n = B * positions products,
    # so errors grow like eps * sqrt(n * fan_in) relative to the sums' magnitude (AVX-512/AMX and
    # the default ATen kernels round differently: 1.37e-6 was seen against a 1e-6 absolute bound).
    eps = torch.finfo(torch.float32).eps
    fan_in = net[0].weight[0].numel()
    with torch.no_grad():
        y = folded[0](x)
    n = y[:, 0].numel()
    y_tol = 4 * eps * fan_in * float(y.abs().max())
    assert bool((y.abs() > y_tol).all()), "an output within rounding of 0 could change regime: pick another seed"
    for key, value in reference.sums["0"].items():
        if key.startswith("n_"):  # counts: no output is a tie, so exact
            torch.testing.assert_close(stats.sums["0"][key], value, rtol=0, atol=0)
            continue
        tol = 4 * eps * (n * fan_in) ** 0.5 * float(value.abs().max())
        torch.testing.assert_close(stats.sums["0"][key], value, rtol=0, atol=tol, msg=key)
