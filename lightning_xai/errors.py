"""The one error type lightning_xai raises for failures during computation."""

from __future__ import annotations

__all__ = ["LightningXAIError", "ShortcutWarning"]


class LightningXAIError(RuntimeError):
    """A failure while computing an explanation.

    The message names the method, the layer (where there is one) and the input shape, so the
    user sees what they passed. Bad *arguments* raise ``ValueError`` / ``TypeError`` instead.
    """


class ShortcutWarning(UserWarning):
    """A class's predictions rest on something other than the object (a shortcut), found during training.

    Emitted by :class:`~lightning_xai.callbacks.ShortcutAlarm` (and raised by it with
    ``on_alarm="raise"``); the message names the class, the explainer, the epoch and the evidence.
    Filter it like any warning (``warnings.simplefilter("error", ShortcutWarning)`` turns it into an
    exception).
    """
