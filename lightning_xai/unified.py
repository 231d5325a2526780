"""The demo data module and model for the unified ``lightning`` package (``lightning.pytorch``).

lightning_xai's callbacks work under both ``pytorch_lightning.Trainer`` and
``lightning.pytorch.Trainer`` as they are. A Trainer only accepts a LightningModule or
LightningDataModule of its own package, though, so the two Lightning classes this library ships
exist twice: :class:`~lightning_xai.data.ShapesDataModule` and
:class:`~lightning_xai.demo.ShapesClassifier` for ``pytorch_lightning``, and the classes here
(same code, other base class) for ``lightning``::

    import lightning.pytorch as L
    from lightning_xai.callbacks import SaliencyMonitor
    from lightning_xai.unified import ShapesClassifier, ShapesDataModule

    L.Trainer(callbacks=[SaliencyMonitor()]).fit(ShapesClassifier(), datamodule=ShapesDataModule())

Raises:
    ImportError: on import, when the ``lightning`` package is not installed.
"""

from __future__ import annotations

try:
    import lightning.pytorch as L
except ImportError as err:  # pragma: no cover - exercised only without the package
    raise ImportError(
        "lightning_xai.unified needs the unified `lightning` package (`pip install lightning`); with "
        "`pytorch_lightning`, use lightning_xai.data.ShapesDataModule and lightning_xai.demo.ShapesClassifier."
    ) from err

from lightning_xai.data.datamodule import ShapesDataModuleMixin
from lightning_xai.demo import ShapesClassifierMixin

__all__ = ["ShapesClassifier", "ShapesDataModule"]


class ShapesDataModule(ShapesDataModuleMixin, L.LightningDataModule):
    __doc__ = ShapesDataModuleMixin.__doc__


class ShapesClassifier(ShapesClassifierMixin, L.LightningModule):
    __doc__ = ShapesClassifierMixin.__doc__
