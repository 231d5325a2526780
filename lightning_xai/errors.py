"""The one error type lightning_xai raises for failures during computation."""

from __future__ import annotations

__all__ = ["LightningXAIError"]


class LightningXAIError(RuntimeError):
    """A failure while computing an explanation.

    The message names the method, the layer (where there is one) and the input shape, so the
    user sees what they passed. Bad *arguments* raise ``ValueError`` / ``TypeError`` instead.
    """
