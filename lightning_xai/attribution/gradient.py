"""Back-propagation saliency: gradient, input x gradient, guided backprop, deconvnet, noise tunnel.

Every method here differentiates the target class score ``S_c`` with respect to the input, with
``torch.autograd.grad`` (never ``.backward()``), inside :func:`~lightning_xai.attribution.base.observe`.

* :class:`Saliency` -- ``dS_c/dx`` (Simonyan et al. 2013), optionally its absolute value.
* :class:`InputXGradient` -- ``x * dS_c/dx`` (Shrikumar et al. 2016).
* :class:`GuidedBackprop` / :class:`Deconvnet` -- the gradient with every ReLU's backward replaced
  (Springenberg et al. 2014; Zeiler & Fergus 2013), through :func:`modified_relu`.
* :class:`NoiseTunnel` -- SmoothGrad, SmoothGrad-squared and VarGrad around any explainer
  (Smilkov et al. 2017; Adebayo et al. 2018).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lightning_xai._validation import check_bool, check_choice, check_float, check_int
from lightning_xai.attribution.base import (
    ExplainContext,
    Explainer,
    TargetType,
    accumulation_dtype,
    default_chunk_rows,
    expand_target,
    forward_scores,
    get_explainer,
    input_gradient,
    resolve_target,
    run_chunked,
    target_indices,
    targets_checked,
    value_bounds,
)
from lightning_xai.errors import LightningXAIError

__all__ = [
    "Deconvnet",
    "GuidedBackprop",
    "InputXGradient",
    "ModifiedReLU",
    "NoiseTunnel",
    "ReluRule",
    "Saliency",
    "deconvnet_rule",
    "guided_rule",
    "modified_relu",
]

ReluRule = Callable[[Tensor, Tensor], Tensor]
"""A ReLU backward rule: ``rule(grad_output, output) -> grad_input``. ``output`` is the ReLU's
forward output (``output > 0`` exactly where the input was positive)."""


# --------------------------------------------------------------------------------------------
# modified ReLU backward
# --------------------------------------------------------------------------------------------
def guided_rule(grad_output: Tensor, output: Tensor) -> Tensor:
    """Guided backpropagation: pass only positive gradients, and only where the input was positive."""
    # threshold_backward(g, out, 0) is g where out > 0, else 0: one fused kernel, no bool->float mask.
    return torch.ops.aten.threshold_backward(grad_output.clamp(min=0), output, 0)


def deconvnet_rule(grad_output: Tensor, output: Tensor) -> Tensor:
    """Deconvnet: a ReLU applied to the backward signal; the forward mask is ignored."""
    return grad_output.clamp(min=0)


_RULES: dict[str, ReluRule] = {"guided": guided_rule, "deconvnet": deconvnet_rule}


class _ModifiedReluFunction(torch.autograd.Function):
    """``relu`` forward (in place when asked, as ``torch.relu_`` would be), ``rule`` backward."""

    @staticmethod
    def forward(ctx: Any, inputs: Tensor, inplace: bool, rule: ReluRule) -> Tensor:  # type: ignore[override]
        if inplace:
            output = torch.relu_(inputs)
            ctx.mark_dirty(inputs)
        else:
            output = torch.relu(inputs)
        ctx.save_for_backward(output)
        ctx.rule = rule
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (output,) = ctx.saved_tensors
        return ctx.rule(grad_output, output), None, None


_OUT_OF_PLACE = {F.relu, torch.relu, Tensor.relu}
_IN_PLACE = {torch.relu_, Tensor.relu_}  # F.relu_ is torch.relu_

# autograd nodes of a ReLU the mode did not intercept, and graphs whose inside autograd cannot see
_PLAIN_RELU_NODES = ("ReluBackward",)
_OPAQUE_NODES = ("DifferentiableGraphBackward", "CompiledFunctionBackward")


class ModifiedReLU(TorchFunctionMode):
    """A ``TorchFunctionMode`` that gives every ReLU called under it a different backward pass.

    It intercepts ``F.relu`` (which ``nn.ReLU`` calls, with or without ``inplace``),
    ``torch.relu``, ``torch.relu_`` / ``F.relu_``, ``Tensor.relu`` and ``Tensor.relu_``, so it
    covers ReLU modules used several times, in-place ReLUs and functional calls that no module
    hook sees. The forward value is unchanged (in-place calls stay in place). Other activations
    (``clamp(min=0)``, ``ReLU6``, ``LeakyReLU``, GELU, ...) keep their ordinary gradient, as in
    captum, which only modifies ``nn.ReLU``.

    Use it through :func:`modified_relu`; after the forward pass, :meth:`verify` walks the
    autograd graph of the output and raises if a ReLU escaped interception (``torch.ops.aten.relu``
    called directly, TorchScript) or if the graph holds a compiled region autograd cannot see into.
    One blind spot remains: an un-intercepted in-place ReLU on a *view* hides inside a
    ``CopySlices`` node and cannot be detected.

    Attributes:
        rule: The backward rule ``(grad_output, output) -> grad_input``.
        calls: How many ReLU calls were intercepted so far.
    """

    def __init__(self, rule: ReluRule) -> None:
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func in _OUT_OF_PLACE or func in _IN_PLACE:
            inputs = args[0] if args else kwargs["input"]
            if func is F.relu:
                inplace = bool(args[1]) if len(args) > 1 else bool(kwargs.get("inplace", False))
            else:
                inplace = func in _IN_PLACE
            self.calls += 1
            return self.replace(inputs, inplace)
        return func(*args, **kwargs)

    def replace(self, inputs: Tensor, inplace: bool) -> Tensor:
        """What an intercepted ReLU call returns: the ReLU with the rule's backward (subclasses
        may compute something else)."""
        return _ModifiedReluFunction.apply(inputs, inplace, self.rule)

    def verify(self, outputs: Tensor, *, method: str = "modified_relu") -> None:
        """Raise if ``outputs`` depends on a ReLU this mode did not modify.

        Args:
            outputs: A tensor computed under the mode (the selected class scores).
            method: The method name used in the error message.

        Raises:
            LightningXAIError: the autograd graph of ``outputs`` holds a plain ReLU node, or a
                TorchScript / ``torch.compile`` region whose ReLUs cannot be seen or modified.
        """
        root = outputs.grad_fn
        if root is None:
            return
        seen: set[Any] = set()
        stack = [root]
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            name = node.name()  # the C++ name: TorchScript's node shows as "CppFunction" in Python
            if name.startswith(_PLAIN_RELU_NODES):
                raise LightningXAIError(
                    f"{method}: the model computes a ReLU that could not be intercepted (autograd node "
                    f"{name}); only F.relu, torch.relu(_), Tensor.relu(_) and nn.ReLU are modified, so "
                    "the map would silently mix modified and ordinary ReLU gradients. Call ReLUs through "
                    "one of those entry points (not torch.ops.aten.relu or TorchScript)."
                )
            if any(opaque in name for opaque in _OPAQUE_NODES):
                raise LightningXAIError(
                    f"{method}: the model contains a compiled region (autograd node {name}) whose ReLUs "
                    "cannot be modified; explain the uncompiled model instead (for torch.compile, "
                    "`model._orig_mod`; for TorchScript, the original Python module)."
                )
            stack.extend(next_node for next_node, _ in node.next_functions)


@contextlib.contextmanager
def modified_relu(rule: str | ReluRule) -> Iterator[ModifiedReLU]:
    """Replace the backward pass of every ReLU called inside the block.

    Only the forward pass needs to run inside the block: the replaced backward is recorded in the
    autograd graph, so ``torch.autograd.grad`` may be called after it exits.

    Args:
        rule: ``"guided"`` (:func:`guided_rule`), ``"deconvnet"`` (:func:`deconvnet_rule`) or a
            callable ``(grad_output, output) -> grad_input``.

    Yields:
        The active :class:`ModifiedReLU` mode; call its :meth:`~ModifiedReLU.verify` on the
        output to make sure no ReLU escaped.

    Raises:
        ValueError: ``rule`` is an unknown name.
        TypeError: ``rule`` is neither a name nor a callable.

    Examples:
        >>> model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> x = torch.randn(2, 3, requires_grad=True)
        >>> with modified_relu("guided") as mode:
        ...     score = model(x)[:, 0].sum()
        >>> mode.verify(score)
        >>> grad, = torch.autograd.grad(score, x)
    """
    if isinstance(rule, str):
        if rule not in _RULES:
            raise ValueError(f"Expected argument `rule` to be one of {sorted(_RULES)} or a callable, but got {rule!r}.")
        fn = _RULES[rule]
    elif callable(rule):
        fn = rule
    else:
        raise TypeError(f"Expected argument `rule` to be a str or a callable, but got {type(rule).__name__}.")
    mode = ModifiedReLU(fn)
    with mode:
        yield mode


# --------------------------------------------------------------------------------------------
# gradient explainers
# --------------------------------------------------------------------------------------------
class Saliency(Explainer):
    """Vanilla gradient saliency: ``dS_c/dx`` (Simonyan et al. 2013), as captum ``Saliency``.

    COST: 1 forward + 1 backward pass of the batch.

    Args:
        abs: Return ``|dS_c/dx|`` (the default, as captum and the paper) instead of the signed
            gradient.

    Raises:
        TypeError: ``abs`` is not a bool.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> Saliency()(model, torch.rand(2, 3, 2, 2), target=1).shape
        torch.Size([2, 3, 2, 2])
    """

    def __init__(self, abs: bool = True) -> None:  # noqa: A002 (captum's name)
        self.abs = check_bool("abs", abs)

    @property
    def signed(self) -> bool:  # type: ignore[override]
        """Signed unless ``abs``."""
        return not self.abs

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        grad, _ = input_gradient(model, inputs, target)
        return grad.abs() if self.abs else grad


class InputXGradient(Explainer):
    """Input times gradient: ``x * dS_c/dx`` (Shrikumar et al. 2016), as captum ``InputXGradient``.

    COST: 1 forward + 1 backward pass of the batch.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> InputXGradient()(model, torch.rand(2, 3, 2, 2), target=0).shape
        torch.Size([2, 3, 2, 2])
    """

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        grad, _ = input_gradient(model, inputs, target)
        return inputs.detach() * grad


class _ModifiedReluGradient(Explainer):
    """The gradient with every ReLU's backward replaced by ``_rule``."""

    _rule: str = "guided"

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        with modified_relu(self._rule) as mode:
            scores, _, _ = forward_scores(model, inputs, target)
        mode.verify(scores, method=type(self).__name__)
        (grad,) = torch.autograd.grad(scores.sum(), inputs)
        return grad


class GuidedBackprop(_ModifiedReluGradient):
    """Guided backpropagation (Springenberg et al. 2014), as captum ``GuidedBackprop``.

    The gradient of ``S_c`` where every ReLU passes back only positive gradients, and only where
    its input was positive: ``grad_in = max(grad_out, 0) * [x > 0]``. ReLUs are found whatever
    way they are called (``nn.ReLU`` also in place or reused, ``F.relu``, ``torch.relu``,
    ``Tensor.relu``), see :func:`modified_relu`; a ReLU that cannot be modified raises
    :class:`~lightning_xai.errors.LightningXAIError` rather than giving a wrong map. Other
    activations keep their ordinary gradient.

    COST: 1 forward + 1 backward pass of the batch.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(inplace=True), nn.Linear(8, 3))
        >>> GuidedBackprop()(model, torch.rand(2, 3, 2, 2)).shape
        torch.Size([2, 3, 2, 2])
    """

    _rule = "guided"


class Deconvnet(_ModifiedReluGradient):
    """Deconvnet (Zeiler & Fergus 2013), as captum ``Deconvolution``.

    The gradient of ``S_c`` where every ReLU applies a ReLU to the backward signal and ignores
    the forward mask: ``grad_in = max(grad_out, 0)``. ReLUs are found as in
    :class:`GuidedBackprop`.

    COST: 1 forward + 1 backward pass of the batch.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> Deconvnet()(model, torch.rand(2, 3, 2, 2), target=2).shape
        torch.Size([2, 3, 2, 2])
    """

    _rule = "deconvnet"


# --------------------------------------------------------------------------------------------
# noise tunnel
# --------------------------------------------------------------------------------------------
_NOISE_KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def _private_generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class NoiseTunnel(Explainer):
    """SmoothGrad, SmoothGrad-squared or VarGrad around another explainer, as captum ``NoiseTunnel``.

    For ``n_samples`` noisy copies ``x + e_k`` of each input (``e_k ~ N(0, sigma^2)`` with
    ``sigma = stdev * (max(x) - min(x))``, per sample, the SmoothGrad paper's convention) and the
    wrapped explainer's maps ``A_k``:

    * ``"smoothgrad"``: ``mean_k A_k`` (Smilkov et al. 2017);
    * ``"smoothgrad_sq"``: ``mean_k A_k**2``;
    * ``"vargrad"``: ``mean_k A_k**2 - (mean_k A_k)**2``, the population variance (divisor ``n``,
      not ``n - 1``), captum's convention (Adebayo et al. 2018). It is computed with a numerically
      stable pairwise update rather than captum's difference of means.

    Unlike captum, whose ``stdevs`` is an absolute standard deviation, ``stdev`` here is a fraction
    of each input's value range. The target is resolved once on the clean input (``None`` -> its
    predicted class) and used for every noisy copy. Noise comes from a private
    ``torch.Generator`` seeded with ``seed`` on the inputs' device (the global RNG is untouched),
    and every input in a batch gets the same standard-normal draws (scaled by its own range), so
    an input's map does not depend on the batch it comes in. The ``n_samples * B`` noisy copies
    go through the wrapped explainer's ``_attribute`` in chunks of ``internal_batch_size`` rows
    (the chunk loop Integrated Gradients uses); the moments accumulate in float32 (float64 for
    float64 inputs).

    COST: with ``target=None``, 1 forward pass of the batch (the predicted classes) + the wrapped explainer's cost on
    ``n_samples`` times the batch (for a gradient method: ``n_samples`` forward + backward passes
    of the batch, in ``ceil(n_samples * B / internal_batch_size)`` calls).

    Args:
        explainer: The explainer to smooth (an :class:`Explainer` or a registered name such as
            ``"saliency"``).
        kind: ``"smoothgrad"``, ``"smoothgrad_sq"`` or ``"vargrad"``.
        n_samples: Number of noisy copies per input.
        stdev: Noise standard deviation as a fraction of each input's ``max - min``.
        seed: Seed of the private noise generator.
        internal_batch_size: Most noisy copies per call of the wrapped explainer (``None``: as
            many as hold :data:`~lightning_xai.attribution.base.DEFAULT_CHUNK_ELEMENTS` input
            elements, 27 images at 3 x 224 x 224, halved with a warning on out-of-memory). A value
            you pass is used as is: out-of-memory then raises ``torch.OutOfMemoryError`` naming
            this argument.

    Raises:
        ValueError: a bad ``kind``, ``n_samples``, ``stdev``, ``seed`` or ``internal_batch_size``,
            or an unknown explainer name.
        TypeError: ``explainer`` is neither an :class:`Explainer` nor a str.

    Examples:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> smooth = NoiseTunnel(Saliency(), kind="smoothgrad", n_samples=8, stdev=0.1)
        >>> smooth(model, torch.rand(2, 3, 2, 2), target=0).shape
        torch.Size([2, 3, 2, 2])
    """

    def __init__(
        self,
        explainer: Explainer | str,
        kind: str = "smoothgrad",
        n_samples: int = 16,
        stdev: float = 0.15,
        seed: int = 0,
        internal_batch_size: int | None = None,
    ) -> None:
        if isinstance(explainer, str):
            explainer = get_explainer(explainer)
        if not isinstance(explainer, Explainer):
            raise TypeError(
                f"Expected argument `explainer` to be an Explainer or a registered name, but got "
                f"{type(explainer).__name__}."
            )
        check_choice("kind", kind, _NOISE_KINDS)
        check_int("n_samples", n_samples, 1)
        check_float("stdev", stdev, 0.0)
        check_int("seed", seed)
        check_int("internal_batch_size", internal_batch_size, 1, allow_none=True)
        self.explainer = explainer
        self.kind = kind
        self.n_samples = n_samples
        self.stdev = float(stdev)
        self.seed = seed
        self.internal_batch_size = internal_batch_size

    @property
    def region(self) -> bool:  # type: ignore[override]
        """Whatever the wrapped explainer returns."""
        return self.explainer.region

    @property
    def signed(self) -> bool:  # type: ignore[override]
        """Only SmoothGrad of a signed explainer is signed."""
        return self.kind == "smoothgrad" and self.explainer.signed

    def check(self, model: nn.Module) -> None:
        """Check the wrapped explainer's configuration against ``model``."""
        self.explainer.check(model)

    def sample_noise(self, inputs: Tensor) -> Tensor:
        """The additive noise this tunnel uses for ``inputs``: ``[n_samples, B, ...]``.

        ``noise[k, i] = stdev * (max(x_i) - min(x_i)) * z_k`` with ``z_k`` standard-normal draws
        of one input's shape from a generator seeded with ``seed`` on ``inputs``' device.
        Deterministic; the global RNG is untouched.

        Args:
            inputs: The clean ``[B, ...]`` batch.

        Returns:
            The noise, in ``inputs``' dtype and on its device.
        """
        z, scale = self._noise_factors(inputs)
        return scale.unsqueeze(0) * z.unsqueeze(1)

    def _noise_factors(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(z [n_samples, ...], scale [B, 1, ...])``: noise ``[k, i]`` is ``scale[i] * z[k]``,
        in float32 for bf16/fp16 inputs (else the inputs' dtype)."""
        dtype = accumulation_dtype(inputs.dtype)
        gen = _private_generator(self.seed, inputs.device)
        z = torch.randn((self.n_samples, *inputs.shape[1:]), generator=gen, device=inputs.device, dtype=dtype)
        return z, self.stdev * value_bounds(inputs.to(dtype))[1]

    def _attribute(self, model: nn.Module, inputs: Tensor, target: TargetType, ctx: ExplainContext) -> Tensor:
        x = inputs.detach()
        batch = x.shape[0]
        if target is None:
            with torch.no_grad():
                resolved = resolve_target(target, model(x))
        else:  # the class range is checked once, by the first chunk's forward pass
            resolved = target_indices(target, batch, x.device)
        z, scale = self._noise_factors(x)  # row r of the noisy stack: copy r // B of input r % B
        x_acc = x.to(z.dtype)
        targets = expand_target(resolved, self.n_samples)
        moments: list[Tensor] = []  # count, mean, m2

        def body(rows: slice) -> None:
            r = torch.arange(rows.start, rows.stop, device=x.device)
            index = r % batch
            noisy = ctx.prepare(x_acc[index] + scale[index] * z[r // batch])
            attr = self.explainer._attribute(model, noisy, targets[rows], ctx).detach()
            merged = _merge_moments(*(moments or (None, None, None)), attr.to(z.dtype), index, batch)
            moments[:] = merged

        size = self.internal_batch_size or default_chunk_rows(x)
        with targets_checked(target is None):  # predicted classes need no range check
            run_chunked(
                self.n_samples * batch,
                size,
                body,
                method=type(self).__name__,
                adaptive=self.internal_batch_size is None,
            )
        count, mean, m2 = moments
        if self.kind == "smoothgrad":
            return mean
        variance = m2 / count.view(-1, *([1] * (mean.ndim - 1)))
        if self.kind == "vargrad":
            return variance
        return variance + mean * mean


def _merge_moments(
    count: Tensor | None, mean: Tensor | None, m2: Tensor | None, values: Tensor, index: Tensor, batch: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Fold the rows ``values`` (row ``r`` belongs to input ``index[r]``) into running per-input
    counts, means and sums of squared deviations (Chan et al.'s pairwise update)."""
    shape = (batch, *values.shape[1:])
    ones = [1] * (values.ndim - 1)
    # per-input counts without bincount (which syncs with the host on CUDA)
    n_b = values.new_zeros(batch).index_add_(0, index, values.new_ones(index.shape[0]))
    sum_b = values.new_zeros(shape).index_add_(0, index, values)
    mean_b = sum_b / n_b.clamp(min=1).view(-1, *ones)
    m2_b = values.new_zeros(shape).index_add_(0, index, (values - mean_b[index]) ** 2)
    if count is None or mean is None or m2 is None:
        return n_b, mean_b, m2_b
    n = count + n_b
    delta = mean_b - mean
    weight = (n_b / n.clamp(min=1)).view(-1, *ones)
    new_mean = mean + delta * weight
    new_m2 = m2 + m2_b + delta * delta * (count * n_b / n.clamp(min=1)).view(-1, *ones)
    return n, new_mean, new_m2
