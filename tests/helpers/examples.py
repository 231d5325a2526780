"""Loading an ``examples/*.py`` script as a module, to call its ``main(argv)`` in-process."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Imports ``examples/<name>.py`` as a fresh module named ``name`` (not added to ``sys.modules``).

    Raises:
        FileNotFoundError: if there is no such example.
    """
    path = EXAMPLES / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"No example script {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
