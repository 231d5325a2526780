"""The package's import graph: no cycles between modules or between sub-packages, and the
explainer library never imports Lightning or the interpretable modules (DESIGN.md, "The flow")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_xai"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(name: str) -> str | None:
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at module level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = _resolve(f"{node.module}.{alias.name}") or _resolve(node.module)
                if target:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(t for a in node.names if (t := _resolve(a.name)))
    return found


def _external(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
    return names


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    # the checks below mean something only if the parser sees the imports we know exist
    assert "lightning_xai.attribution.base" in GRAPH["lightning_xai.attribution.cam.grad_cam"]
    assert "lightning_xai.attribution" in GRAPH["lightning_xai.callbacks.saliency"] or any(
        m.startswith("lightning_xai.attribution") for m in GRAPH["lightning_xai.callbacks.saliency"]
    )


def test_no_import_cycle_between_modules():
    assert _cycles(GRAPH) == []


def test_no_import_cycle_between_subpackages():
    packages: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        packages.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module)
        )
    assert _cycles(packages) == []


def test_a_cycle_is_detected():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", ["attribution", "concepts", "influence", "metrics"])
def test_the_library_never_imports_lightning(package: str):
    offenders = {
        name
        for name, path in MODULES.items()
        if name.startswith(f"lightning_xai.{package}")
        and _external(path) & {"pytorch_lightning", "lightning", "lightning_fabric"}
    }
    assert offenders == set()


def test_attribution_never_imports_the_interpretable_modules():
    offenders = {
        (name, target)
        for name, targets in GRAPH.items()
        if name.startswith("lightning_xai.attribution")
        for target in targets
        if target.startswith("lightning_xai.modules")
    }
    assert offenders == set()


def test_no_private_name_is_imported_from_another_subpackage():
    offenders = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_xai."):
                if _package(node.module) == _package(name):
                    continue
                offenders.update((name, node.module, a.name) for a in node.names if a.name.startswith("_"))
    assert offenders == set()


def test_a_moved_name_says_where_it_went():
    import lightning_xai.attribution as attribution

    with pytest.raises(AttributeError, match=r"lightning_xai\.modules\.MaskingModelExplainer"):
        attribution.MaskingModelExplainer  # noqa: B018
    assert "masking_model" in attribution.available_explainers()
    assert type(attribution.get_explainer("masking_model")).__module__ == "lightning_xai.modules.masking"
