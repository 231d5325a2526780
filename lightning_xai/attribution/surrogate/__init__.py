"""Surrogate explainers over superpixels: LIME, Kernel SHAP, Anchors, and XRAI's region ranking.

The interpretable features are superpixels from scikit-image (:func:`superpixels`: ``"slic"``,
``"quickshift"`` or ``"felzenszwalb"``, chosen by name, or any callable). A coalition
``z in {0, 1}^K`` keeps the superpixels where ``z = 1`` and replaces the others by a baseline
(``z[segments] * x + (1 - z[segments]) * baseline``, captum's transform). All coalitions of a
batch go through the model in chunks of ``internal_batch_size`` rows; the surrogate fits are solved in
torch, batched over the inputs (float64).

* :class:`LIME` (Ribeiro, Singh & Guestrin 2016): weighted ridge regression on random binary
  coalitions, exponential kernel on the cosine distance to the full coalition.
* :class:`KernelSHAP` (Lundberg & Lee 2017): Shapley-kernel weighted regression with the
  efficiency constraint ``sum(phi) = f(x) - f(baseline)`` enforced exactly; exhaustive (exact
  Shapley values) when ``2^K - 2 <= n_samples``.
* :class:`Anchors` (Ribeiro, Singh & Guestrin 2018): the smallest set of superpixels that keeps
  the prediction with precision >= ``threshold`` at confidence ``1 - delta`` (KL-LUCB inside a
  beam search).
* :class:`XRAI` (Kapishnikov et al. 2019): over-segment at several scales, rank regions by
  integrated gradients with black and white baselines, grow the region set greedily.

Segments and coalitions can be injected (``attribute(..., segments=..., samples=...)``), which is
how the tests compare with captum on identical inputs.

One method per module (``lime.py``, ``kernel_shap.py``, ``anchors.py``, ``xrai.py``) on the
shared base in ``base.py``; superpixels come from ``segmentation.py``. This package re-exports every
public name.
"""

from lightning_xai.attribution.surrogate.anchors import AnchorResult, Anchors, kl_bounds
from lightning_xai.attribution.surrogate.kernel_shap import KernelSHAP, shapley_kernel
from lightning_xai.attribution.surrogate.lime import LIME, lime_kernel
from lightning_xai.attribution.surrogate.segmentation import SEGMENTATIONS, superpixels
from lightning_xai.attribution.surrogate.xrai import XRAI

__all__ = [
    "SEGMENTATIONS",
    "AnchorResult",
    "Anchors",
    "KernelSHAP",
    "LIME",
    "XRAI",
    "kl_bounds",
    "lime_kernel",
    "shapley_kernel",
    "superpixels",
]
