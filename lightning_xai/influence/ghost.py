"""Per-example gradient norms and inner products from what an ordinary backward already has.

For a layer ``y = f(a; W)`` that is linear in its weights, example ``i``'s gradient of ``W`` is a
contraction of the layer's input ``a_i`` (seen by a forward hook) with the gradient ``b_i`` of the
loss at the layer's output (seen by a tensor hook during backward). Its squared norm and its inner
product with a given gradient follow without forming the per-example gradient of the whole model
("ghost norms", Goodfellow 2015; Li et al. 2022; the choice between the Gram form and forming the
layer's per-example gradient follows Bu et al. 2022's mixed ghost norm):

* ``nn.Linear`` over ``T`` tokens: ``g_i = sum_t b_it a_it^T``. ``T = 1``:
  ``|g_i|^2 = |a_i|^2 |b_i|^2``. Otherwise the Gram form ``sum_{t,s} (a_it.a_is)(b_it.b_is)``
  (cost ``T^2 (in + out)`` per example) or the formed ``out x in`` gradient (cost
  ``T in out``), whichever is cheaper.
* ``nn.Conv1d`` / ``nn.Conv2d`` (any stride, dilation, padding and padding mode, groups): the same
  over the ``L`` output positions of the unfolded input (``F.unfold``).
* BatchNorm (``nn.BatchNorm1d/2d/3d`` with ``affine=True``): ``g_i(weight) = sum_s xhat_is b_is``,
  ``g_i(bias) = sum_s b_is``, with ``xhat`` normalised by the statistics the forward used (the
  batch's in training mode, the running ones in eval mode). In training mode the examples of a
  batch interact through the statistics; ``g_i`` is then example i's share of the batch gradient.
* ``nn.Embedding``: ``|g_i|^2 = sum_{t,s} [idx_it = idx_is] (b_it.b_is)`` (rows at
  ``padding_idx`` excluded).

A layer called several times in one forward counts once, with all its calls' tokens together (its
gradient is the sum over the calls). No Lightning import.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lightning_xai.errors import LightningXAIError

__all__ = ["SUPPORTED_LAYERS", "GhostGradients", "countable_layers", "per_example_from_factors"]

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, _BatchNorm, nn.Embedding)
"""Layer types whose own trainable parameters ghost norms count exactly."""


def countable_layers(
    model: nn.Module, layers: Optional[Sequence[str]] = None, on_unsupported: str = "raise", method: str = "ghost"
) -> dict[str, nn.Module]:
    """The modules whose trainable parameters are counted, by name.

    Args:
        model: The model.
        layers: Module names to count (their own and their sub-modules' parameters); ``None``:
            every module that owns a trainable parameter.
        on_unsupported: ``"raise"`` (``ValueError``) or ``"warn"`` (``UserWarning``; the layer's
            parameters are left out of every norm) for a trainable parameter owned by a layer type
            not in :data:`SUPPORTED_LAYERS`, a parameter shared by two modules, or an
            ``Embedding`` with ``scale_grad_by_freq``.
        method: The caller's name, for messages.

    Raises:
        ValueError: An unknown layer name, a layer that cannot be counted (with ``"raise"``), or
            no trainable parameter at all.
    """
    import warnings

    if on_unsupported not in ("raise", "warn"):
        raise ValueError(f"Expected argument `on_unsupported` to be 'raise' or 'warn', but got {on_unsupported!r}.")
    roots: list[tuple[str, nn.Module]]
    if layers is None:
        roots = [("", model)]
    else:
        roots = []
        for name in layers:
            try:
                roots.append((name, model.get_submodule(name)))
            except AttributeError as err:
                raise ValueError(f"{method}: the model has no layer {name!r}.") from err
    owners: dict[int, str] = {}
    counted: dict[str, nn.Module] = {}
    for root_name, root in roots:
        for sub, module in root.named_modules(remove_duplicate=True):
            name = ".".join(p for p in (root_name, sub) if p)
            own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
            if not own:
                continue
            problem = None
            if not isinstance(module, SUPPORTED_LAYERS):
                problem = (
                    f"layer {name!r} ({type(module).__name__}) owns trainable parameters "
                    f"{[n for n, _ in own]} that ghost norms cannot count (counted: Linear, Conv1d, Conv2d, "
                    f"BatchNorm, Embedding)"
                )
            elif isinstance(module, nn.Embedding) and module.scale_grad_by_freq:
                problem = f"layer {name!r} is an Embedding with scale_grad_by_freq=True, which ghost norms do not count"
            for _, p in own:
                if id(p) in owners and owners[id(p)] != name:
                    problem = f"layer {name!r} shares a parameter with {owners[id(p)]!r} (tied weights)"
                owners[id(p)] = name
            if problem is not None:
                if on_unsupported == "raise":
                    raise ValueError(
                        f"{method}: {problem}. Freeze them (requires_grad=False), choose `layers`, or pass "
                        f"on_unsupported='warn' to leave them out."
                    )
                warnings.warn(f"{method}: {problem}; left out of the self-influence.", UserWarning, stacklevel=2)
                continue
            counted[name] = module
    if not counted:
        raise ValueError(f"{method}: no trainable parameter to count.")
    return counted


# --------------------------------------------------------------------------------------------
# per-layer factors: (input side a, output-gradient side b) with tokens in the last dimension
# --------------------------------------------------------------------------------------------
def _unfold(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """``[B, C_in * k, L]``: the conv's input patches, padded exactly as its forward pads."""
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, dilation, stride = (1, module.kernel_size[0]), (1, module.dilation[0]), (1, module.stride[0])
    else:
        kernel, dilation, stride = module.kernel_size, module.dilation, module.stride  # type: ignore[assignment]
    pad = list(module._reversed_padding_repeated_twice)
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        if isinstance(module, nn.Conv1d) and mode != "constant":
            x = F.pad(x.squeeze(2), pad, mode=mode).unsqueeze(2)
        else:
            x = F.pad(x, pad, mode=mode)
    return F.unfold(x, kernel, dilation=dilation, padding=0, stride=stride)


def _factors(module: nn.Module, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Linear/Conv: ``(a [B, G, K, L], b [B, G, O, L])`` with ``g_i(W) = sum_l b a^T`` per group."""
    if isinstance(module, nn.Linear):
        a = a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2).unsqueeze(1)
        b = b.reshape(b.shape[0], -1, b.shape[-1]).transpose(1, 2).unsqueeze(1)
        return a, b
    assert isinstance(module, (nn.Conv1d, nn.Conv2d))
    g = module.groups
    unf = _unfold(module, a)
    return unf.reshape(unf.shape[0], g, -1, unf.shape[-1]), b.reshape(b.shape[0], g, -1, unf.shape[-1])


def _bn_xhat(module: _BatchNorm, x: Tensor, batch_stats: bool) -> Tensor:
    """The normalised input the forward computed (batch or running statistics), one fused kernel."""
    if batch_stats:
        return F.batch_norm(x, None, None, training=True, eps=module.eps)
    return F.batch_norm(x, module.running_mean, module.running_var, training=False, eps=module.eps)


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim)


def _conv_weight_grads(module: nn.Conv1d | nn.Conv2d, calls: list[tuple[Tensor, Tensor, bool]]) -> Tensor:
    """``[B, *weight.shape]`` per-example weight gradients by the conv's own weight-gradient kernel,
    run as one grouped convolution over the batch (groups ``B * groups``): no unfolded input."""
    total: Optional[Tensor] = None
    for x, g, _ in calls:
        n = x.shape[0]
        padding: Any = module.padding
        if isinstance(padding, str) or module.padding_mode != "zeros":
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            x = F.pad(x, list(module._reversed_padding_repeated_twice), mode=mode)
            padding = 0
        shape = (n * module.out_channels, *module.weight.shape[1:])
        fn = torch.nn.grad.conv1d_weight if isinstance(module, nn.Conv1d) else torch.nn.grad.conv2d_weight
        w = fn(
            x.reshape(1, -1, *x.shape[2:]),
            shape,
            g.reshape(1, -1, *g.shape[2:]),
            stride=module.stride,
            padding=padding,
            dilation=module.dilation,
            groups=n * module.groups,
        ).reshape(n, *module.weight.shape)
        total = w if total is None else total + w
    assert total is not None
    return total


def per_example_from_factors(module: nn.Module, calls: list[tuple[Tensor, Tensor, bool]]) -> dict[str, Tensor]:
    """Each own parameter's per-example gradients ``[B, *shape]``, formed from a layer's calls.

    ``calls`` holds ``(input, output gradient, batch_stats)`` per call of the layer in one
    forward. Memory ``B x`` the layer's parameter count: meant for small batches (probes).
    """
    out: dict[str, Tensor] = {}
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        if module.weight.requires_grad:
            out["weight"] = _conv_weight_grads(module, calls)
        if module.bias is not None:
            out["bias"] = sum(g.flatten(2).sum(-1) for _, g, _ in calls)  # type: ignore[assignment]
    elif isinstance(module, nn.Linear):
        pairs = [_factors(module, a, b) for a, b, _ in calls]
        a, b = _cat([p[0] for p in pairs], -1), _cat([p[1] for p in pairs], -1)
        out["weight"] = torch.einsum("bgol,bgkl->bgok", b, a).reshape(b.shape[0], *module.weight.shape)
        if module.bias is not None:
            out["bias"] = b.sum(-1).reshape(b.shape[0], -1)
    elif isinstance(module, _BatchNorm):
        w = bias = None
        for a, b, stats in calls:
            xhat = _bn_xhat(module, a, stats)
            dims = list(range(2, a.ndim))
            wi = (xhat * b).sum(dims) if dims else xhat * b
            bi = b.sum(dims) if dims else b
            w = wi if w is None else w + wi
            bias = bi if bias is None else bias + bi
        out["weight"], out["bias"] = w, bias  # type: ignore[assignment]
    elif isinstance(module, nn.Embedding):
        idx = _cat([a.reshape(a.shape[0], -1) for a, _, _ in calls], 1)
        b = _cat([b.reshape(b.shape[0], -1, b.shape[-1]) for _, b, _ in calls], 1)
        if module.padding_idx is not None:
            b = b * (idx != module.padding_idx).unsqueeze(-1)
        grad = b.new_zeros(b.shape[0], module.num_embeddings, module.embedding_dim)
        grad.scatter_add_(1, idx.unsqueeze(-1).expand_as(b), b)
        out["weight"] = grad
    return {k: v for k, v in out.items() if getattr(module, k).requires_grad}


def _sq_norms(module: nn.Module, calls: list[tuple[Tensor, Tensor, bool]]) -> dict[str, Tensor]:
    """Each own parameter's ``[B]`` squared per-example gradient norms (Gram form or formed
    gradient, whichever costs fewer multiply-adds)."""
    if isinstance(module, (nn.Conv1d, nn.Conv2d)):
        length = sum(g[0].numel() // g.shape[1] for _, g, _ in calls)  # output positions
        k = module.weight[0].numel()
        o = module.out_channels // module.groups
        if length > 1 and length * (k + o) >= k * o:  # forming the gradient is cheaper than the Gram form
            out = {k_: (v * v).flatten(1).sum(1) for k_, v in per_example_from_factors(module, calls).items()}
            return out
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        pairs = [_factors(module, a, b) for a, b, _ in calls]
        a, b = _cat([p[0] for p in pairs], -1), _cat([p[1] for p in pairs], -1)
        k, o, length = a.shape[2], b.shape[2], a.shape[3]
        out: dict[str, Tensor] = {}
        if module.weight.requires_grad:
            if length == 1:
                out["weight"] = ((a * a).sum((2, 3)) * (b * b).sum((2, 3))).sum(1)
            elif length * (k + o) < k * o:  # Gram form over positions
                aa = torch.einsum("bgkl,bgkm->bglm", a, a)
                bb = torch.einsum("bgol,bgom->bglm", b, b)
                out["weight"] = (aa * bb).sum((1, 2, 3))
            else:
                g = torch.einsum("bgol,bgkl->bgok", b, a)
                out["weight"] = (g * g).sum((1, 2, 3))
        if module.bias is not None and module.bias.requires_grad:
            s = b.sum(-1)
            out["bias"] = (s * s).sum((1, 2))
        return out
    if isinstance(module, nn.Embedding):
        idx = _cat([a.reshape(a.shape[0], -1) for a, _, _ in calls], 1)
        b = _cat([b.reshape(b.shape[0], -1, b.shape[-1]) for _, b, _ in calls], 1)
        if module.padding_idx is not None:
            b = b * (idx != module.padding_idx).unsqueeze(-1)
        same = (idx.unsqueeze(2) == idx.unsqueeze(1)).to(b.dtype)
        return {"weight": (same * (b @ b.transpose(1, 2))).sum((1, 2))}
    return {k: (v * v).flatten(1).sum(1) for k, v in per_example_from_factors(module, calls).items()}


def _dots(module: nn.Module, calls: list[tuple[Tensor, Tensor, bool]], probe: dict[str, Tensor]) -> Tensor:
    """``[B, P]`` inner products of each example's gradient of the layer's own parameters with
    ``P`` given gradients ``probe[name]: [P, *shape]``, without forming ``[B, *shape]`` when the
    positions are fewer than the input features."""
    total: Optional[Tensor] = None

    def add(x: Tensor) -> None:
        nonlocal total
        total = x if total is None else total + x

    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
        pairs = [_factors(module, a, b) for a, b, _ in calls]
        a, b = _cat([p[0] for p in pairs], -1), _cat([p[1] for p in pairs], -1)
        groups, k = a.shape[1], a.shape[2]
        if "weight" in probe:
            w = probe["weight"].reshape(probe["weight"].shape[0], groups, -1, k)  # [P, G, O, K]
            if probe["weight"].shape[0] * a.shape[3] <= k:
                add(torch.einsum("pgok,bgkl,bgol->bp", w, a, b))
            else:
                add(torch.einsum("bgol,bgkl->bgok", b, a).flatten(1) @ w.flatten(1).T)
        if "bias" in probe:
            add(b.sum(-1).flatten(1) @ probe["bias"].T)
    elif isinstance(module, nn.Embedding):
        idx = _cat([a.reshape(a.shape[0], -1) for a, _, _ in calls], 1)
        b = _cat([b.reshape(b.shape[0], -1, b.shape[-1]) for _, b, _ in calls], 1)
        if module.padding_idx is not None:
            b = b * (idx != module.padding_idx).unsqueeze(-1)
        rows = probe["weight"][:, idx]  # [P, B, T, dim]
        add(torch.einsum("pbtd,btd->bp", rows, b))
    else:
        for name, g in per_example_from_factors(module, calls).items():
            if name in probe:
                add(g.flatten(1) @ probe[name].flatten(1).T)
    assert total is not None
    return total


class GhostGradients:
    """Hooks that turn a model's ordinary backward into per-example gradient statistics.

    While :attr:`active`, forward hooks on the counted layers keep each call's input, and a tensor
    hook on its output receives the output gradient during backward; as soon as every call of a
    layer has its gradient, the layer's contribution is added to :attr:`sq_norms` (``[B]``:
    ``sum_p weight(p) * scale^2 * |g_i(p)|^2``) and, when :meth:`set_probe` gave probe gradients,
    to :attr:`dots` (``[B, P]``: ``sum_p weight(p) * scale * <g_i(p), probe(p)>``), and its tensors
    are dropped. ``g_i`` is the gradient of the backward's loss with respect to example i's share;
    ``scale`` turns it into example i's own gradient (the batch size for a mean-reduced loss).

    Cost per backward: no second pass and no per-example gradient of the model. Per layer, the
    cheaper of the Gram form and the formed per-example layer gradient (see the module
    docstring), typically a few percent to a third of the layer's backward; memory, one layer's
    unfolded input and Gram matrix or per-example gradient at a time (the layers' inputs are
    kept until their gradients arrive, as autograd keeps them anyway). With probe gradients, each
    layer adds ``P`` inner products per example (about ``P`` times the layer's weight-gradient
    multiply-adds when positions outnumber input features, ``P`` forward-like contractions
    otherwise).

    Args:
        model: The model.
        layers: ``{name: module}`` from :func:`countable_layers`.
        weight: ``weight(param) -> float``, read when a layer's contribution is added (e.g. the
            learning rate of the param group holding it); default 1.

    Examples:
        >>> model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> ghost = GhostGradients(model, countable_layers(model))
        >>> with ghost.attached():
        ...     ghost.start(scale=5.0)
        ...     nn.functional.cross_entropy(model(torch.randn(5, 4)), torch.tensor([0, 1, 0, 1, 1])).backward()
        ...     norms = ghost.finish()  # [5] squared per-example gradient norms
    """

    def __init__(
        self,
        model: nn.Module,
        layers: dict[str, nn.Module],
        weight: Optional[Callable[[nn.Parameter], float]] = None,
    ) -> None:
        self.model = model
        self.layers = layers
        self.weight = weight or (lambda p: 1.0)
        self.active = False
        self.scale = 1.0
        self.sq_norms: Optional[Tensor] = None
        self.dots: Optional[Tensor] = None
        self.seconds = 0.0
        """Wall time spent inside the hooks so far (the norms' computation during the backward)."""
        self._probe: Optional[dict[str, dict[str, Tensor]]] = None
        self._calls: dict[str, list[list]] = {}  # name -> [[input, grad or None, batch_stats], ...]
        self._handles: list = []

    # -- hooks ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def attached(self) -> Iterator[GhostGradients]:
        """Hooks on for the block, removed on every exit path."""
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    def attach(self) -> None:
        """Register the forward hooks (idempotent)."""
        if self._handles:
            return
        for name, module in self.layers.items():
            self._handles.append(module.register_forward_hook(self._forward_hook(name)))

    def detach(self) -> None:
        """Remove every hook and drop kept tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._calls.clear()
        self.active = False

    def _forward_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: object) -> None:
            if not self.active or not isinstance(output, Tensor) or not output.requires_grad:
                return
            x = args[0]
            if not isinstance(x, Tensor):
                return
            batch_stats = isinstance(module, _BatchNorm) and (module.training or module.running_mean is None)
            calls = self._calls.setdefault(name, [])
            record = [x.detach(), None, batch_stats]
            calls.append(record)

            def grad_hook(grad: Tensor) -> None:
                start = time.perf_counter()
                record[1] = grad.detach()
                if all(c[1] is not None for c in calls):
                    self._add(name)
                self.seconds += time.perf_counter() - start

            output.register_hook(grad_hook)

        return hook

    # -- accumulation --------------------------------------------------------------------------
    def set_probe(self, probe: Optional[dict[str, dict[str, Tensor]]]) -> None:
        """Gradients to take inner products with for the next backward: ``{layer: {param: [P, *shape]}}``
        (``None``: none)."""
        self._probe = probe

    def start(self, scale: float = 1.0) -> None:
        """Begin a backward's accumulation: zero :attr:`sq_norms` / :attr:`dots` and switch the
        hooks on. ``scale`` multiplies each example's gradient (the batch size for a mean loss)."""
        self.scale = float(scale)
        self.sq_norms = None
        self.dots = None
        self._calls.clear()
        self.active = True

    def _add(self, name: str) -> None:
        module = self.layers[name]
        raw = self._calls.pop(name)
        calls = [(a, b, s) for a, b, s in raw if b is not None]
        if not calls:
            return
        dtype = torch.float64 if any(b.dtype == torch.float64 for _, b, _ in calls) else torch.float32
        calls = [(a if not a.is_floating_point() else a.to(dtype), b.to(dtype), s) for a, b, s in calls]
        try:
            with torch.no_grad():
                norms = _sq_norms(module, calls)
                contribution = sum(self.weight(getattr(module, p)) * v for p, v in norms.items())
                if not isinstance(contribution, Tensor):
                    return
                contribution = contribution * self.scale**2
                self.sq_norms = contribution if self.sq_norms is None else self.sq_norms + contribution
                if self._probe is not None and name in self._probe:
                    probe = {p: g.to(dtype) for p, g in self._probe[name].items()}
                    d = sum(self.weight(getattr(module, p)) * _dots(module, calls, {p: g}) for p, g in probe.items())
                    d = d * self.scale
                    self.dots = d if self.dots is None else self.dots + d
        except RuntimeError as err:
            shape = tuple(calls[0][0].shape)
            raise LightningXAIError(
                f"ghost norms: layer {name!r} ({type(module).__name__}) with input of shape {shape}: {err}"
            ) from err

    def finish(self) -> Tensor:
        """End the backward's accumulation: add the layers whose calls did not all receive a
        gradient, switch the hooks off, and return :attr:`sq_norms` (an empty tensor when no
        counted layer received a gradient)."""
        for name in list(self._calls):
            self._add(name)
        self.active = False
        return self.sq_norms if self.sq_norms is not None else torch.zeros(0)
