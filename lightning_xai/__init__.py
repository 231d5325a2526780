"""lightning_xai: explainability as part of training, for PyTorch Lightning."""

from lightning_xai.errors import LightningXAIError, ShortcutWarning

__version__ = "0.1.0"

__all__ = ["LightningXAIError", "ShortcutWarning", "__version__"]
