"""Random projections of per-example gradients that never form a ``D x k`` matrix.

:class:`GradientSketch` maps a gradient ``g`` (``D`` numbers, split by parameter) to ``k`` numbers
with a count sketch (Charikar et al. 2002): coordinate ``d`` is added, with a random sign
``s(d)``, to bucket ``h(d)``. Then ``E[<S g, S g'>] = <g, g'>`` over the draw of ``(h, s)``, and the
variance is at most ``(|g|^2 |g'|^2 + <g, g'>^2) / k``, the bound of a Gaussian projection.

The parameters of an ``nn.Linear`` layer get a Kronecker-structured hash (TensorSketch, Pham &
Pagh 2013): entry ``(o, i)`` of the weight goes to bucket ``(h_out(o) + h_in(i)) mod k`` with sign
``s_out(o) s_in(i)``, and the bias is column ``i = in_features``. A per-example gradient of such a
layer is an outer product ``delta (x) act``, so its sketch is the circular convolution of the two
factors' count sketches (an FFT of length ``k``): the factored last-layer path projects the two
factors separately and never forms the outer product, and gives the same numbers as sketching the
dense gradient.

Stored: one ``int32`` per parameter coordinate (bucket and sign packed), ``4 D`` bytes, never
``D x k``. Every hash is drawn from ``(seed, parameter or layer name)`` alone, so training and test
examples, every checkpoint and every process see the same projection.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

__all__ = ["GradientSketch"]


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


class GradientSketch:
    """A seeded count sketch (TensorSketch on ``nn.Linear`` layers) of per-example gradients.

    Args:
        model: The network whose parameters are sketched (only names and shapes are read).
        names: The selected parameter names, in the order of the flattened gradients.
        dim: ``k``, the sketch's dimension.
        seed: Seed of every hash.
        device: Where the hashes live (they are drawn on the CPU, then moved).

    Cost: ``D`` random integers drawn (lazily, per parameter) and ``4 D`` bytes kept; sketching a
    ``[B, D_p]`` gradient block is one ``index_add_`` into ``[B, 2k]`` (no ``B x D`` temporary);
    a factored Linear gradient costs two ``index_add_`` and an FFT of length ``k`` per example.
    """

    def __init__(self, model: nn.Module, names: list[str], dim: int, seed: int, device: torch.device) -> None:
        self.dim = int(dim)
        self.seed = int(seed)
        self.device = device
        params = dict(model.named_parameters())
        self.names = list(names)
        self.shapes = {n: tuple(params[n].shape) for n in names}
        self._linear: dict[str, tuple[str, int, int, bool]] = {}  # param -> (layer, out, in, is_bias)
        for layer, module in model.named_modules():
            if isinstance(module, nn.Linear):
                for attr, is_bias in (("weight", False), ("bias", True)):
                    tensor = getattr(module, attr)
                    name = f"{layer}.{attr}" if layer else attr
                    if tensor is not None and name in self.shapes:
                        self._linear[name] = (layer, module.out_features, module.in_features, is_bias)
        self._packed: dict[str, Tensor] = {}

    # -- hashes -------------------------------------------------------------------------------------
    def _hash(self, key: str, n: int) -> tuple[Tensor, Tensor]:
        """``(bucket [n] in [0, k), sign [n] in {0, 1})`` drawn from ``(seed, key)``."""
        gen = _generator(self.seed, key)
        bucket = torch.randint(0, self.dim, (n,), generator=gen, dtype=torch.int64)
        sign = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64)
        return bucket, sign

    def factor_hashes(self, layer: str, out_features: int, in_features: int) -> tuple[Tensor, Tensor]:
        """Packed hashes ``bucket + k * negative`` of a Linear layer's output (``[out]``) and input
        side (``[in + 1]``, the last entry the bias column), on the sketch's device."""
        out_b, out_s = self._hash(f"{layer}:out", out_features)
        in_b, in_s = self._hash(f"{layer}:in", in_features + 1)
        return (
            (out_b + self.dim * out_s).to(device=self.device, dtype=torch.int32),
            (in_b + self.dim * in_s).to(device=self.device, dtype=torch.int32),
        )

    def packed(self, name: str) -> Tensor:
        """``[numel]`` int32 ``bucket + k * negative`` of parameter ``name`` (row-major), cached."""
        if name not in self._packed:
            numel = 1
            for s in self.shapes[name]:
                numel *= s
            if name in self._linear:
                layer, out_f, in_f, is_bias = self._linear[name]
                out_b, out_s = self._hash(f"{layer}:out", out_f)
                in_b, in_s = self._hash(f"{layer}:in", in_f + 1)
                if is_bias:
                    in_b, in_s = in_b[in_f:], in_s[in_f:]
                else:
                    in_b, in_s = in_b[:in_f], in_s[:in_f]
                bucket = ((out_b[:, None] + in_b[None, :]) % self.dim).flatten()
                sign = (out_s[:, None] ^ in_s[None, :]).flatten()
            else:
                bucket, sign = self._hash(name, numel)
            self._packed[name] = (bucket + self.dim * sign).to(device=self.device, dtype=torch.int32)
        return self._packed[name]

    def stored_elements(self) -> int:
        """Elements the sketch holds now (its hashes): at most ``D``, never ``D x k``."""
        return sum(t.numel() for t in self._packed.values())

    # -- sketching ----------------------------------------------------------------------------------
    def _scatter(self, values: Tensor, packed: Tensor, out: Tensor | None = None) -> Tensor:
        """Add ``values [B, n]`` with their signs into ``[B, 2k]`` (positive half, negative half)."""
        if out is None:
            out = values.new_zeros(values.shape[0], 2 * self.dim)
        return out.index_add_(1, packed, values)

    def _fold(self, buckets: Tensor) -> Tensor:
        return buckets[:, : self.dim] - buckets[:, self.dim :]

    def blocks(self, grads: dict[str, Tensor]) -> Tensor:
        """``[B, k]`` sketch of per-example gradients given per parameter (``[B, *shape]`` each)."""
        out: Tensor | None = None
        for name in self.names:
            g = grads[name]
            out = self._scatter(g.reshape(g.shape[0], -1), self.packed(name), out)
        assert out is not None
        return self._fold(out)

    def flat(self, grads: Tensor) -> Tensor:
        """``[B, k]`` sketch of flattened gradients ``[B, D]`` (parameters in :attr:`names` order)."""
        parts, start = {}, 0
        for name in self.names:
            numel = 1
            for s in self.shapes[name]:
                numel *= s
            parts[name] = grads[:, start : start + numel]
            start += numel
        return self.blocks(parts)

    def factored(self, layer: str, module: nn.Linear, delta: Tensor, act: Tensor) -> Tensor:
        """``[B, k]`` sketch of the Linear layer's gradients ``delta[b] (x) act[b]`` without forming
        them: the circular convolution of the factors' count sketches. ``act`` carries the trailing
        1 of the bias column when the layer has a bias (and only then)."""
        out_packed, in_packed = self.factor_hashes(layer, module.out_features, module.in_features)
        in_packed = in_packed[: act.shape[1]]
        a = self._fold(self._scatter(delta, out_packed))
        b = self._fold(self._scatter(act, in_packed))
        n = self.dim
        compute = torch.float64 if delta.dtype == torch.float64 else torch.float32
        conv = torch.fft.irfft(torch.fft.rfft(a.to(compute), n=n) * torch.fft.rfft(b.to(compute), n=n), n=n)
        return conv.to(delta.dtype)
