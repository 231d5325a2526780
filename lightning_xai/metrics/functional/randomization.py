"""Sanity checks (Adebayo et al. 2018; Kindermans et al. 2017): maps must depend on the model.

* :func:`parameter_randomization`: re-initialise the model's layers, top layer first, either
  cumulatively (``"cascading"``) or one at a time (``"independent"``), on a deep copy, and score
  the similarity of each randomised model's maps to the trained model's. A map that stays
  similar while the weights are destroyed does not explain the model.
* :func:`data_randomization`: the maps of a model trained on permuted labels against the real
  model's (train the copy with your Trainer; this library never imports Lightning).
* :func:`input_invariance`: a copy whose first layer absorbs a constant input shift computes the
  same function; its map of the shifted input must equal the original map.

The trained model is never touched: every change happens on a ``copy.deepcopy``, and the global
RNG state is restored after each seeded re-initialisation.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lightning_xai._validation import check_float, check_int
from lightning_xai.attribution.base import TargetType
from lightning_xai.errors import LightningXAIError
from lightning_xai.metrics.functional._common import (
    ExplainFn,
    check_batch,
    check_explainer,
    explain_batched,
    given_or_explained,
    resolve,
)
from lightning_xai.metrics.functional.similarity import _map_similarity_update, check_measure

__all__ = [
    "randomization_layers",
    "parameter_randomization",
    "data_randomization",
    "input_invariance",
    "model_copy",
    "shifted_model",
]


def model_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``; objects a module only refers to (a Lightning ``_trainer``) are
    shared, not copied."""
    memo: dict[int, object] = {}
    for module in model.modules():
        for key in ("_trainer", "_fabric"):
            value = module.__dict__.get(key)
            if value is not None and not isinstance(value, (bool, int, float, str)):
                memo[id(value)] = value
    with torch.inference_mode(False):  # under an outer inference_mode the copy's tensors stay usable by autograd
        return copy.deepcopy(model, memo)


def randomization_layers(model: nn.Module, order: str = "top_down") -> list[str]:
    """Names of the layers :func:`parameter_randomization` re-initialises, in its order.

    A layer is a sub-module with ``reset_parameters`` (convolutions, linear layers, norms), as
    quantus ``MPRT``; ``"top_down"`` is the reverse of ``model.named_modules()`` order.

    Examples:
        >>> randomization_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))
        ['2', '0']
    """
    if order not in ("top_down", "bottom_up"):
        raise ValueError(f"Expected argument `order` in ('top_down', 'bottom_up'), but got {order!r}.")
    names = [name for name, m in model.named_modules() if name and callable(getattr(m, "reset_parameters", None))]
    return names[::-1] if order == "top_down" else names


def _reset(module: nn.Module, seed: int) -> None:
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices}) if devices else []):
        torch.manual_seed(seed)
        with torch.no_grad():
            module.reset_parameters()


def parameter_randomization(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    mode: str = "cascading",
    measure: str = "spearman",
    order: str = "top_down",
    layers: list[str] | None = None,
    seed: int = 43,
    attributions: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Model parameter randomisation test (Adebayo et al. 2018).

    On a deep copy of ``model``, each layer of :func:`randomization_layers` (or ``layers``) in
    turn is re-initialised with ``reset_parameters()`` under ``torch.manual_seed(seed)`` (the
    global RNG is restored afterwards), cumulatively for ``"cascading"`` or from the trained
    weights each time for ``"independent"``, and the copy's maps are compared with the trained
    model's by :func:`~lightning_xai.metrics.functional.map_similarity`. The target is the one
    explained on the trained model (its prediction for ``None``). With ``seed = s + 1`` this is
    quantus ``MPRT(seed=s)`` (``abs=False, normalise=False``). Cost: one explainer call per layer.

    Args:
        model: The trained model (left untouched).
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``.
        target: Class per input; ``None`` for the trained model's prediction.
        mode: ``"cascading"`` or ``"independent"``.
        measure: Similarity, one of :data:`~lightning_xai.metrics.functional.similarity.MEASURES`.
        order: ``"top_down"`` (the paper's) or ``"bottom_up"``.
        layers: Explicit layer names, in order.
        seed: Seed of each re-initialisation.
        attributions: The trained model's maps if already computed.
        batch_size: Most inputs per explainer call.

    Returns:
        ``[L, B]`` similarities, row ``l`` after randomising the ``l``-th layer. Passing the check
        means low similarity.

    Raises:
        ValueError: Unknown mode, measure or layer.
        LightningXAIError: The explainer returns NaN or infinity.

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> parameter_randomization(model, torch.rand(3, 1, 4, 4), Saliency()).shape
        torch.Size([2, 3])
    """
    method = "parameter_randomization"
    check_explainer(explainer, method)
    if mode not in ("cascading", "independent"):
        raise ValueError(f"{method}: expected `mode` in ('cascading', 'independent'), but got {mode!r}.")
    check_measure(measure)
    check_int("seed", seed, 0)
    inputs = check_batch("inputs", inputs, method=method)
    names = randomization_layers(model, order) if layers is None else list(layers)
    known = dict(model.named_modules())
    for name in names:
        if name not in known or not callable(getattr(known[name], "reset_parameters", None)):
            raise ValueError(
                f"{method}: {name!r} is not a layer with reset_parameters; valid: {randomization_layers(model)}."
            )
    if not names:
        raise ValueError(f"{method}: the model has no layer with reset_parameters to randomise.")
    x, tgt = resolve(model, inputs, target)
    original = given_or_explained(explainer, model, x, tgt, attributions, batch_size, method)
    random_model = model_copy(model)
    modules = dict(random_model.named_modules())
    pristine = {k: v.clone() for k, v in random_model.state_dict().items()} if mode == "independent" else None
    rows = []
    for name in names:
        if pristine is not None:
            random_model.load_state_dict(pristine)
        _reset(modules[name], seed)
        maps = explain_batched(explainer, random_model, x, tgt, batch_size, method=method)
        rows.append(_map_similarity_update(maps, original, measure))
    return torch.stack(rows)


def data_randomization(
    model: nn.Module,
    random_model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    measure: str = "spearman",
    attributions: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Data randomisation test (Adebayo et al. 2018): similarity between the maps of ``model``
    and of ``random_model``, a copy trained on randomly permuted labels.

    Low similarity passes: a method whose maps survive the loss of every label-input relation
    does not explain what the model learnt. Train ``random_model`` yourself (same architecture,
    labels permuted once with a fixed seed, trained to fit them); the example
    ``examples/metrics_sanity.py`` does it with a Lightning Trainer. Cost: two explainer calls.

    Args:
        model: The model trained on the real labels.
        random_model: The model trained on permuted labels.
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``.
        target: Class per input; ``None`` for ``model``'s prediction (used for both models).
        measure: One of :data:`~lightning_xai.metrics.functional.similarity.MEASURES`.
        attributions: ``model``'s maps if already computed.
        batch_size: Most inputs per explainer call.

    Returns:
        ``[B]`` similarities.

    Examples:
        >>> from lightning_xai.attribution import Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> torch.allclose(data_randomization(model, model, x, Saliency()), torch.ones(2))
        True
    """
    method = "data_randomization"
    check_explainer(explainer, method)
    check_measure(measure)
    if not isinstance(random_model, nn.Module):
        raise TypeError(f"{method}: expected `random_model` to be an nn.Module, but got {type(random_model).__name__}.")
    inputs = check_batch("inputs", inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    original = given_or_explained(explainer, model, x, tgt, attributions, batch_size, method)
    maps = explain_batched(explainer, random_model, x, tgt, batch_size, method=method)
    return _map_similarity_update(maps.to(original.device), original, measure)


def _first_layer(model: nn.Module, method: str) -> tuple[str, nn.Module]:
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            if module.bias is None:
                raise LightningXAIError(
                    f"{method}: the first layer {name!r} ({type(module).__name__}) has no bias to absorb the shift."
                )
            return name, module
    raise LightningXAIError(f"{method}: the model has no convolution or linear layer to absorb the input shift.")


def shifted_model(model: nn.Module, shift: float) -> nn.Module:
    """A copy of ``model`` whose first convolution/linear layer absorbs ``+shift`` on every input
    value: ``bias' = bias - shift * sum(weight)`` per output channel (exact away from zero padding).

    Examples:
        >>> model = nn.Sequential(nn.Linear(3, 2))
        >>> x = torch.rand(4, 3)
        >>> torch.allclose(shifted_model(model, -1.0)(x - 1.0), model(x), atol=1e-6)
        True
    """
    copy_ = model_copy(model)
    _, layer = _first_layer(copy_, "input_invariance")
    with torch.no_grad():
        dims = tuple(range(1, layer.weight.ndim))
        layer.bias.sub_(shift * layer.weight.sum(dim=dims))
    return copy_


def input_invariance(
    model: nn.Module,
    inputs: Tensor,
    explainer: ExplainFn,
    target: TargetType = None,
    *,
    shift: float = -1.0,
    atol: float = 1e-4,
    attributions: Tensor | None = None,
    batch_size: int | None = None,
) -> Tensor:
    """Input invariance (Kindermans et al. 2017): 1 where the map of ``x`` on ``model`` equals the
    map of ``x + shift`` on :func:`shifted_model` (which computes the same function) to within
    ``atol`` (and a relative ``1e-5``), else 0, as quantus ``InputInvariance``.

    Gradient maps pass; input-times-gradient and reference-based maps with a fixed reference
    fail. With a zero-padded first convolution the shifted model differs at the border, so use
    ``padding=0`` models for an exact check. Cost: two explainer calls.

    Args:
        model: The model (left untouched).
        inputs: ``[B, C, H, W]`` inputs.
        explainer: ``explainer(model, inputs, target) -> maps``.
        target: Class per input; ``None`` for the prediction.
        shift: The constant added to every input value.
        atol: Absolute tolerance of the comparison.
        attributions: ``model``'s maps if already computed.
        batch_size: Most inputs per explainer call.

    Returns:
        ``[B]`` in ``{0., 1.}``.

    Raises:
        LightningXAIError: The first layer has no bias, or the explainer returns NaN.

    Examples:
        >>> from lightning_xai.attribution import InputXGradient, Saliency
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.rand(2, 1, 4, 4)
        >>> input_invariance(model, x, Saliency()), input_invariance(model, x, InputXGradient())
        (tensor([1., 1.]), tensor([0., 0.]))
    """
    method = "input_invariance"
    check_explainer(explainer, method)
    shift = check_float("shift", shift)
    atol = check_float("atol", atol, 0.0)
    inputs = check_batch("inputs", inputs, method=method)
    x, tgt = resolve(model, inputs, target)
    original = given_or_explained(explainer, model, x, tgt, attributions, batch_size, method)
    moved = explain_batched(explainer, shifted_model(model, shift), x + shift, tgt, batch_size, method=method)
    close = torch.isclose(original, moved, rtol=1e-5, atol=atol)
    return close.flatten(1).all(dim=1).to(inputs.dtype)
