"""The shape of the code: no import runs back up a layer, no two modules import each other,
and no module grows past 700 lines. Read from the source with ``ast`` (imports inside
functions and under TYPE_CHECKING count too)."""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# Each layer may import only the layers after it in this list.
LAYERS = ["app.__main__", "app.cli", "app.ui", "app.runtime", "app.api", "app.core"]
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)
        found[name] = {t for t in targets if t == "app" or t.startswith("app.")}
    return found


def _layer(module: str) -> int | None:
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return None


def test_no_import_runs_back_up_a_layer() -> None:
    wrong = []
    for module, targets in _imports().items():
        mine = _layer(module)
        for target in targets:
            theirs = _layer(target)
            if mine is not None and theirs is not None and theirs < mine:
                wrong.append(f"{module} imports {target}")
    assert not wrong, wrong


def test_no_two_modules_import_each_other() -> None:
    graph = _imports()
    modules = set(graph)
    edges = {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}
    pairs = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets
                    if a in edges.get(b, set()) and not b.startswith(a + ".") and not a.startswith(b + ".")})
    assert not pairs, pairs


def test_no_module_over_700_lines() -> None:
    long = {str(p.relative_to(APP.parent)): n for p in APP.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long
