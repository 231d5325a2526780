"""Write docs/monitors.md: every monitor's constructor arguments side by side, read from the signatures.

Run from anywhere (``make docs`` runs it before ``mkdocs build``):

    python docs/gen_monitor_table.py            # writes docs/monitors.md
    python docs/gen_monitor_table.py --check    # exits 1 when docs/monitors.md is stale

The callbacks are the classes ``lightning_xai.callbacks.__all__`` exports that subclass Lightning's
``Callback``, less the abstract bases (``MonitorBase``, ``ProbeMonitor``). Nothing here names an
argument, so the table follows the code when a signature changes.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "monitors.md"
BASES = {"MonitorBase", "ProbeMonitor"}

HEADER = """# Monitor arguments

Every callback's constructor arguments side by side. Generated from the signatures by
`docs/gen_monitor_table.py` (`make docs` runs it first), so it matches the code it was built from.

A cell holds the argument's default; **required** means it has none. *(positional)* marks the
arguments that may be passed by position; all others are keyword-only. An empty cell means the
callback has no such argument. Arguments shared by several callbacks come first, then the ones
specific to a pillar. What each argument means is in the callback's API page
([`lightning_xai.callbacks`](api/callbacks.md)).
"""


def callbacks() -> list[type]:
    sys.path.insert(0, str(ROOT))
    import pytorch_lightning as pl

    import lightning_xai.callbacks as module

    found = []
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) and issubclass(obj, pl.Callback) and name not in BASES:
            found.append(obj)
    return found


def parameters(cls: type) -> list[inspect.Parameter]:
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # drop self
    return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def cell(param: inspect.Parameter) -> str:
    if param.default is inspect.Parameter.empty:
        text = "**required**"
    else:
        value = repr(param.default)
        if len(value) > 40:
            value = value[:37] + "..."
        text = "`" + value.replace("|", "\\|") + "`"
    if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
        text += " *(positional)*"
    return text


def summary(cls: type) -> str:
    doc = inspect.getdoc(cls) or ""
    first = doc.strip().split("\n\n")[0].replace("\n", " ")
    return first.replace("``", "`").replace(":class:", "").replace("|", "\\|")


def render() -> str:
    classes = callbacks()
    params = {cls.__name__: {p.name: p for p in parameters(cls)} for cls in classes}
    order: dict[str, tuple[int, int]] = {}
    for cls in classes:
        for name in params[cls.__name__]:
            users = sum(name in p for p in params.values())
            order.setdefault(name, (-users if users > 1 else 0, len(order)))
    names = sorted(order, key=lambda n: order[n])

    lines = [HEADER, "## The callbacks", "", "| callback | what it does |", "|---|---|"]
    lines += [f"| `{cls.__name__}` | {summary(cls)} |" for cls in classes]
    lines += ["", "## Arguments", ""]
    lines.append("| argument | " + " | ".join(f"`{cls.__name__}`" for cls in classes) + " |")
    lines.append("|---|" + "---|" * len(classes))
    for name in names:
        row = [cell(params[cls.__name__][name]) if name in params[cls.__name__] else "" for cls in classes]
        lines.append(f"| `{name}` | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/monitors.md differs from the code")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run python docs/gen_monitor_table.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
