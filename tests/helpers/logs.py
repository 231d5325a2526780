"""Reading logs back: TensorBoard event files without TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def read_tensorboard(log_dir: str | Path) -> list[Any]:
    """One loaded ``EventAccumulator`` per event file under ``log_dir`` (sorted by path), keeping every
    image, scalar, histogram and tensor (the default keeps 4 images per tag).

    Raises:
        AssertionError: if ``log_dir`` holds no event file.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {log_dir}"
    accs = []
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "histograms": 0, "tensors": 0})
        acc.Reload()
        accs.append(acc)
    return accs
