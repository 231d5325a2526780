"""Pure functions of the concept methods: layer activations, layer gradients, directional
derivatives, TCAV scores and the significance test.

Every function that runs the model does so inside :func:`~lightning_xai.attribution.base.observe`
(eval mode, no parameter gradient, RNG and BatchNorm statistics restored, hooks removed on every
path) and reads a layer's *true* output (the hook hands the rest of the network a clone, so an
in-place ``ReLU`` after the layer does not change what is recorded; see
:class:`~lightning_xai.attribution.cam.LayerCapture`).

Examples:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> derivatives = directional_derivatives(model, torch.randn(5, 4), 1, "0", torch.eye(3))
    >>> derivatives.shape, 0.0 <= tcav_score(derivatives[:, 0]) <= 1.0
    (torch.Size([5, 3]), True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lightning_xai.attribution.base import (
    ExplainContext,
    OutputType,
    TargetType,
    chunks,
    forward_scores,
    get_layer,
    observe,
)
from lightning_xai.attribution.capture import LayerCapture
from lightning_xai.errors import LightningXAIError

__all__ = [
    "layer_activations",
    "layer_gradients",
    "directional_derivatives",
    "tcav_score",
    "tcav_statistic",
    "welch_t_test",
    "prediction_test",
]


def _as_layers(layers: str | Sequence[str], method: str) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Sequence) or not layers or not all(isinstance(n, str) and n for n in layers):
        raise TypeError(
            f"{method}: expected `layer` to be a dotted module name or a non-empty list of them, but got {layers!r}."
        )
    return list(dict.fromkeys(layers))


def _captures(ctx: ExplainContext, model: nn.Module, layers: list[str], method: str) -> dict[str, LayerCapture]:
    captures = {}
    for name in layers:
        capture = LayerCapture(name, method)
        capture._handle = ctx.add_hook(get_layer(model, name, method=method).register_forward_hook(capture))
        captures[name] = capture
    return captures


def _check_inputs(inputs: object, method: str, what: str = "inputs") -> Tensor:
    if not isinstance(inputs, Tensor):
        raise TypeError(f"{method}: expected `{what}` to be a tensor, but got {type(inputs).__name__}.")
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise ValueError(
            f"{method}: expected a non-empty batch of {what} [B, ...], but got shape {tuple(inputs.shape)}."
        )
    if not inputs.is_floating_point():
        raise TypeError(f"{method}: expected floating-point {what}, but got dtype {inputs.dtype}.")
    return inputs


def _forward_error(err: RuntimeError, method: str, what: str, shape: tuple[int, ...]) -> ValueError:
    return ValueError(f"{method}: the model cannot run on {what} of shape {list(shape)}: {err}")


def layer_activations(
    model: nn.Module,
    inputs: Tensor,
    layers: str | Sequence[str],
    *,
    batch_size: int | None = None,
    flatten: bool = True,
    method: str = "layer_activations",
    what: str = "inputs",
) -> dict[str, Tensor]:
    """The outputs of one or several layers for ``inputs``, from one forward pass per batch.

    Args:
        model: The model.
        inputs: ``[N, ...]`` inputs (moved to the model's device batch by batch).
        layers: One dotted layer name or several.
        batch_size: Forward at most this many inputs at once (``None``: all at once).
        flatten: Return ``[N, D]`` (the activation of one input flattened) instead of the layer's shape.
        method: Name used in error messages.
        what: What the inputs are, for error messages (``"'stripes' examples"``).

    Returns:
        ``{layer: activations}`` on the model's device, detached.

    Raises:
        ValueError: an unknown layer, or the model cannot run on inputs of this shape.
        LightningXAIError: a layer ran zero or several times in a forward pass.
    """
    inputs = _check_inputs(inputs, method, what)
    names = _as_layers(layers, method)
    out: dict[str, list[Tensor]] = {name: [] for name in names}
    with observe(model) as ctx:
        captures = _captures(ctx, model, names, method)
        with torch.no_grad():
            for part in chunks(inputs.shape[0], batch_size):
                x = inputs[part].detach().to(ctx.device)
                try:
                    model(x)
                except RuntimeError as err:
                    raise _forward_error(err, method, what, tuple(inputs.shape)) from err
                for name, capture in captures.items():
                    act = capture.activation
                    out[name].append(act.flatten(1) if flatten else act)
                    capture.outputs.clear()
    return {name: torch.cat(parts) for name, parts in out.items()}


def layer_gradients(
    model: nn.Module,
    inputs: Tensor,
    target: TargetType,
    layers: str | Sequence[str],
    *,
    batch_size: int | None = None,
    method: str = "layer_gradients",
    output: OutputType = None,
) -> tuple[dict[str, Tensor], Tensor]:
    """Gradients of the target scores w.r.t. the flattened outputs of one or several layers.

    One forward and one backward pass per batch, whatever the number of layers.

    Args:
        model: A model returning ``[B, C]`` scores.
        inputs: ``[N, ...]`` inputs.
        target: Class index (``int``), ``[N]`` indices, or ``None`` for the predicted class.
        layers: One dotted layer name or several.
        batch_size: At most this many inputs per pass (``None``: all at once).
        method: Name used in error messages.
        output: Where the ``[B, C]`` scores are when the model returns a tuple, dict or dataclass
            (see :func:`~lightning_xai.attribution.base.select_output`).

    Returns:
        ``({layer: [N, D] gradient}, resolved [N] target)``, detached, on the model's device.

    Raises:
        ValueError: an unknown layer, a class index out of range, or inputs the model cannot run on.
        LightningXAIError: a layer ran zero or several times in a forward pass, or is not on the
            path to the output.
    """
    inputs = _check_inputs(inputs, method)
    names = _as_layers(layers, method)
    grads: dict[str, list[Tensor]] = {name: [] for name in names}
    targets: list[Tensor] = []
    full_target = target
    if isinstance(target, Tensor) and target.numel() > 1:
        full_target = target.reshape(-1)
        if full_target.numel() != inputs.shape[0]:
            raise ValueError(
                f"{method}: expected `target` to hold one class index per input ({inputs.shape[0]}), "
                f"but got shape {tuple(target.shape)}."
            )
    with observe(model, output=output) as ctx:
        captures = _captures(ctx, model, names, method)
        for part in chunks(inputs.shape[0], batch_size):
            x = ctx.prepare(inputs[part])  # a leaf that requires grad: the layer outputs join the graph
            part_target = (
                full_target[part] if isinstance(full_target, Tensor) and full_target.numel() > 1 else full_target
            )
            try:
                scores, resolved, _ = forward_scores(model, x, part_target)
            except RuntimeError as err:
                raise _forward_error(err, method, "inputs", tuple(inputs.shape)) from err
            acts = [captures[name].activation for name in names]
            for capture in captures.values():
                capture.outputs.clear()
            try:
                parts = torch.autograd.grad(scores.sum(), acts, allow_unused=True)
            except RuntimeError as err:
                raise LightningXAIError(
                    f"{method}: cannot differentiate the target score w.r.t. layers {names} on inputs of shape "
                    f"{tuple(inputs.shape)}: {err}"
                ) from err
            for name, act, grad in zip(names, acts, parts):
                if grad is None:
                    raise LightningXAIError(f"{method}: the target score does not depend on layer {name!r}.")
                grads[name].append(grad.detach().flatten(1))
                del act
            targets.append(resolved)
    return {name: torch.cat(parts) for name, parts in grads.items()}, torch.cat(targets)


def directional_derivatives(
    model: nn.Module,
    inputs: Tensor,
    target: TargetType,
    layer: str,
    vector: Tensor,
    *,
    batch_size: int | None = None,
    output: OutputType = None,
) -> Tensor:
    """Directional derivatives of the target score along concept vectors (Kim et al. 2018, eq. 1).

    ``S_{C,k,l}(x) = grad h_{l,k}(f_l(x)) . v``: the gradient of class ``k``'s score w.r.t. the
    flattened output of ``layer``, dotted with each vector. One forward and one backward pass per
    batch for any number of vectors.

    Args:
        model: A model returning ``[B, C]`` scores.
        inputs: ``[B, ...]`` inputs.
        target: Class index (``int``), ``[B]`` indices, or ``None`` for the predicted class.
        layer: Dotted name of the layer.
        vector: One ``[D]`` vector or ``K`` vectors ``[K, D]`` in the layer's flattened activation
            space (``D`` = the layer's output size for one input), e.g. :attr:`CAV.vector`.
        batch_size: At most this many inputs per pass (``None``: all at once).
        output: Where the scores are when the model returns a tuple, dict or dataclass.

    Returns:
        ``[B]`` for one vector, ``[B, K]`` for ``K`` vectors, on the model's device.

    Raises:
        ValueError: the vector's size does not match the layer, an unknown layer, a class index
            out of range.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
        >>> directional_derivatives(model, torch.randn(4, 3), 0, "0", torch.ones(3)).shape
        torch.Size([4])
    """
    method = "directional_derivatives"
    if not isinstance(vector, Tensor):
        raise TypeError(f"{method}: expected `vector` to be a tensor, but got {type(vector).__name__}.")
    if vector.ndim not in (1, 2):
        raise ValueError(f"{method}: expected `vector` of shape [D] or [K, D], but got {tuple(vector.shape)}.")
    grads, _ = layer_gradients(model, inputs, target, layer, batch_size=batch_size, method=method, output=output)
    grad = grads[layer]
    vectors = vector.reshape(-1, vector.shape[-1])
    if vectors.shape[1] != grad.shape[1]:
        raise ValueError(
            f"{method}: layer {layer!r} has {grad.shape[1]} activations per input, but `vector` has size "
            f"{vector.shape[-1]}."
        )
    out = grad @ vectors.to(device=grad.device, dtype=grad.dtype).T
    return out[:, 0] if vector.ndim == 1 else out


def tcav_score(derivatives: Tensor, *, magnitude: bool = False) -> Tensor | float:
    """TCAV score from directional derivatives ``[B]`` (one vector) or ``[B, K]`` (``K`` vectors).

    The sign-count score is the fraction of inputs whose derivative is positive (Kim et al. 2018,
    ``TCAV_Q``); with ``magnitude=True`` it is the positive part's share of the total magnitude,
    ``sum(max(d, 0)) / sum(|d|)`` (0.5 when every derivative is 0).

    Args:
        derivatives: Output of :func:`directional_derivatives`.
        magnitude: Use the magnitude variant.

    Returns:
        A float for ``[B]`` derivatives, a ``[K]`` tensor for ``[B, K]``.

    Raises:
        ValueError: ``derivatives`` is empty or has more than two dimensions.

    Examples:
        >>> tcav_score(torch.tensor([1.0, -2.0, 3.0, 0.5]))
        0.75
        >>> round(tcav_score(torch.tensor([1.0, -2.0, 3.0, 0.5]), magnitude=True), 4)
        0.6923
    """
    if not isinstance(derivatives, Tensor):
        raise TypeError(f"tcav_score: expected a tensor of derivatives, but got {type(derivatives).__name__}.")
    if derivatives.ndim not in (1, 2) or derivatives.shape[0] == 0:
        raise ValueError(
            f"tcav_score: expected derivatives of shape [B] or [B, K] with B > 0, but got {tuple(derivatives.shape)}."
        )
    d = derivatives.float()
    if magnitude:
        total = d.abs().sum(0)
        score = torch.where(total > 0, d.clamp(min=0).sum(0) / total.clamp(min=torch.finfo(d.dtype).tiny), 0.5)
    else:
        score = (d > 0).float().mean(0)
    return float(score) if derivatives.ndim == 1 else score


def tcav_statistic(
    derivatives: Tensor,
    statistic: str,
    *,
    gradient_norms: Tensor | None = None,
    displacements: Tensor | None = None,
) -> Tensor:
    """One statistic per CAV from directional derivatives ``[B, K]`` (``K`` CAVs).

    * ``"sign"``: the paper's score, the fraction of positive derivatives (:func:`tcav_score`);
    * ``"magnitude"``: ``sum(max(d, 0)) / sum(|d|)`` (:func:`tcav_score` with ``magnitude=True``);
    * ``"cosine"``: ``mean_i d_i / |g_i|``, the mean cosine between the (unit) CAV and the
      gradient (``gradient_norms`` ``[B]``: the gradients' norms; a zero gradient counts as 0);
    * ``"effect"``: ``mean_i d_i * displacements``, the first-order change of the class score when
      the activations move by each CAV's ``displacements`` ``[K]`` (``v . (mu_pos - mu_neg)``).

    Raises:
        ValueError: an unknown statistic, or a missing ``gradient_norms``/``displacements``.

    Examples:
        >>> d = torch.tensor([[1.0, -2.0], [3.0, 0.5]])
        >>> tcav_statistic(d, "effect", displacements=torch.tensor([2.0, 1.0])).tolist()
        [4.0, -0.75]
    """
    d = derivatives.reshape(derivatives.shape[0], -1)
    if statistic in ("sign", "magnitude"):
        return tcav_score(d, magnitude=statistic == "magnitude")  # type: ignore[return-value]
    if statistic == "cosine":
        if gradient_norms is None:
            raise ValueError("tcav_statistic: 'cosine' needs `gradient_norms`.")
        norms = gradient_norms.to(d).reshape(-1, 1)
        return torch.where(norms > 0, d / norms.clamp(min=torch.finfo(d.dtype).tiny), 0.0).mean(0)
    if statistic == "effect":
        if displacements is None:
            raise ValueError("tcav_statistic: 'effect' needs `displacements`.")
        return d.double().mean(0) * displacements.to(device=d.device, dtype=torch.float64).reshape(-1)
    raise ValueError(f"tcav_statistic: unknown statistic {statistic!r}; expected sign, magnitude, cosine or effect.")


def welch_t_test(a: Tensor, b: Tensor) -> float:
    """Two-sided p-value of Welch's t-test that samples ``a`` and ``b`` have equal means.

    Two samples without spread: p = 1 when their means are equal, 0 otherwise.

    Raises:
        ValueError: a sample has fewer than two values.

    Examples:
        >>> round(welch_t_test(torch.tensor([0.9, 0.8, 1.0]), torch.tensor([0.5, 0.4, 0.6])), 4)
        0.008
    """
    a, b = a.detach().double().cpu().reshape(-1), b.detach().double().cpu().reshape(-1)
    if a.numel() < 2 or b.numel() < 2:
        raise ValueError(f"welch_t_test: expected at least two values per sample, but got {a.numel()} and {b.numel()}.")
    va, vb = a.var(unbiased=True) / a.numel(), b.var(unbiased=True) / b.numel()
    diff = float(a.mean() - b.mean())
    se2 = float(va + vb)
    if se2 <= 0.0:
        return 1.0 if diff == 0.0 else 0.0
    t = diff / math.sqrt(se2)
    dof = se2**2 / float(va**2 / (a.numel() - 1) + vb**2 / (b.numel() - 1))
    from scipy.special import stdtr

    return float(min(1.0, 2.0 * stdtr(dof, -abs(t))))


def prediction_test(a: Tensor, null: Tensor) -> float:
    """Two-sided p-value that the mean of ``a`` is one more draw from the distribution of single
    ``null`` values: ``t = (mean(a) - mean(null)) / (sd(null) * sqrt(1 + 1 / n_null))`` with
    ``n_null - 1`` degrees of freedom (a prediction interval).

    Where each null value comes from an independent random "concept", ``sd(null)`` includes how
    much a random set's own choice moves a score, which a two-sample t-test over CAVs that share
    one concept set leaves out; the test is then valid (conservative) for a single concept set.

    Raises:
        ValueError: ``null`` has fewer than two values or ``a`` is empty.

    Examples:
        >>> round(prediction_test(torch.tensor([0.9, 0.8, 1.0]), torch.tensor([0.5, 0.4, 0.6])), 4)
        0.0742
    """
    a, b = a.detach().double().cpu().reshape(-1), null.detach().double().cpu().reshape(-1)
    if a.numel() < 1 or b.numel() < 2:
        raise ValueError(
            f"prediction_test: expected at least one value and two null values, but got {a.numel()} and {b.numel()}."
        )
    diff = float(a.mean() - b.mean())
    spread = float(b.std(unbiased=True)) * math.sqrt(1.0 + 1.0 / b.numel())
    if spread <= 0.0:
        return 1.0 if diff == 0.0 else 0.0
    from scipy.special import stdtr

    return float(min(1.0, 2.0 * stdtr(b.numel() - 1, -abs(diff) / spread)))
