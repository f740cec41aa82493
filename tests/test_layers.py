"""The shape of the code, read from the source with ``ast`` (imports inside functions and under
TYPE_CHECKING count too):

* no import runs back up a layer, and no two modules import each other;
* the parts of ``app/core`` and ``app/ui`` (a package, or a module at the layer's root) form no
  cycle, and each part keeps out of the parts :data:`NEVER` names;
* the UI's windows, dialogs and tray use only the core's pure vocabulary (:data:`UI_VOCABULARY`):
  what acts or does slow I/O goes through ``app/ui/bridge.py``, off the GUI thread;
* no module grows past 700 lines, no package past 15 modules, and every package says what it
  is for in its ``__init__.py``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# Each layer may import only the layers after it in this list.
LAYERS = ["app.__main__", "app.cli", "app.ui", "app.runtime", "app.api", "app.core"]
MAX_LINES = 700
MAX_MODULES = 15

CORE_PACKAGES = ["models", "memory", "config", "hub", "engine", "remotes", "importers", "doctor"]
# What each part must never import (a part: a package of app.core or app.ui, or a module at
# their root). Everything in app.core is also kept from app.ui, app.api and app.cli by LAYERS.
NEVER = {
    "app.core.config": [f"app.core.{p}" for p in CORE_PACKAGES if p != "config"]
    + ["app.core.manager", "app.core.client", "app.core.errors", "app.core.discovery"],
    "app.core.models": ["app.core.memory", "app.core.hub", "app.core.engine", "app.core.remotes",
                        "app.core.importers", "app.core.manager", "app.core.client"],
    "app.core.memory": ["app.core.hub", "app.core.engine", "app.core.remotes", "app.core.importers",
                        "app.core.manager", "app.core.client"],
    "app.core.hub": ["app.core.models", "app.core.memory", "app.core.engine", "app.core.remotes",
                     "app.core.manager", "app.core.client"],
    "app.core.engine": ["app.core.models", "app.core.hub", "app.core.remotes", "app.core.importers",
                        "app.core.manager", "app.core.client"],
    "app.core.remotes": ["app.core.models", "app.core.memory", "app.core.hub", "app.core.engine",
                         "app.core.importers", "app.core.manager", "app.core.client"],
    "app.core.importers": ["app.core.models", "app.core.memory", "app.core.hub", "app.core.engine",
                           "app.core.remotes", "app.core.manager", "app.core.client"],
    # figures as plain data, fed by the manager's events: the memory book is reached through the manager
    "app.core.metrics": ["app.core.memory", "app.core.hub", "app.core.engine", "app.core.remotes",
                         "app.core.importers", "app.core.manager", "app.core.client"],
    # `siesta doctor` reads files and asks (llama-server, the GPUs, the port, remotes): no manager runs
    "app.core.doctor": ["app.core.manager", "app.core.client"],
    "app.core.errors": ["app.core"],
    "app.core.spawn": ["app"],  # standard library only: the engine build runs it before install
    "app.core.client": ["app.core.manager"],  # a Siesta elsewhere, shaped as a manager, not one
    "app.ui.platform": ["app.ui.tray", "app.ui.windows", "app.ui.dialogs", "app.ui.bridge", "app.ui.app"],
    "app.ui.tray": ["app.ui.windows", "app.ui.dialogs", "app.ui.app"],
    "app.ui.windows": ["app.ui.tray", "app.ui.dialogs", "app.ui.app"],
    "app.ui.dialogs": ["app.ui.tray", "app.ui.windows", "app.ui.app"],
}
# The core's pure vocabulary that windows, dialogs and the tray may use directly: module ->
# the names they may import from it ("*": all of it: nothing there acts or blocks).
UI_VOCABULARY = {
    "app.core.config.durations": "*",
    "app.core.config.sizes": "*",
    "app.core.metrics.words": "*",  # memory given back in words, as siesta ps says it
    "app.core.config.memory_limits": "*",
    "app.core.models.llama_args": "*",
    "app.core.memory.fit": "*",
    "app.core.memory.gguf_estimate": "*",  # reads a GGUF's header: a few KB
    "app.core.hub.choice": "*",
    "app.core.spawn": {"child_options"},  # the keyword arguments a child process gets on this OS
    "app.core.config.settings": {"RUNTIME_SETTABLE", "validate_setting"},
    "app.core.config.recipes": {"is_valid_name"},
    "app.core.config.atomic_write": {"in_order"},  # hands a write to the file writer's thread
    "app.core.engine.release": {"tag_number"},
    "app.core.hub.client": {"HubClient", "HubError", "GatedRepo", "HubUnreachable", "RepoInfo", "RepoSummary",
                            "repo_url"},
    "app.core.hub.download": {"DownloadCancelled", "DownloadFailed", "IntegrityError", "NotEnoughDiskSpace"},
    "app.core.hub.pull": {"PullResult", "RecipeExists", "default_model_name"},
}
UI_PARTS_ON_THE_BRIDGE = ("app.ui.tray", "app.ui.windows", "app.ui.dialogs")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in APP.rglob("*.py")}


def _imported(path: Path, name: str) -> Iterator[tuple[str, str | None]]:
    """(module, imported name or None) for each import in the file; ``from PKG import mod``
    gives the submodule itself."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    yield f"{module}.{alias.name}", None
                else:
                    yield module, alias.name


def _imports() -> dict[str, set[str]]:
    return {name: {m for m, _ in _imported(path, name) if m == "app" or m.startswith("app.")}
            for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    for index, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(prefix + "."):
            return index
    return None


def _part(module: str) -> str | None:
    """The part of app.core or app.ui a module belongs to: ``app.core.memory.book`` ->
    ``app.core.memory``, ``app.core.manager`` -> itself; None outside them and for the bare
    packages."""
    parts = module.split(".")
    if parts[:2] not in (["app", "core"], ["app", "ui"]) or len(parts) < 3:
        return None
    return ".".join(parts[:3])


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


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
    edges = {m: {t for t in targets if t in MODULES and t != m} for m, targets in graph.items()}
    pairs = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets
                    if a in edges.get(b, set()) and not b.startswith(a + ".") and not a.startswith(b + ".")})
    assert not pairs, pairs


def _part_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, targets in _imports().items():
        mine = _part(module)
        if mine is None:
            continue
        edges = graph.setdefault(mine, set())
        edges.update(p for t in targets if (p := _part(t)) is not None and p != mine)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of two or more parts (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_parts_form_no_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check itself
    assert not _cycles(_part_graph())


def test_no_part_imports_what_it_must_never_import() -> None:
    wrong = []
    for module, targets in _imports().items():
        for part, never in NEVER.items():
            if not _within(module, part):
                continue
            wrong += [f"{module} imports {target}" for target in targets for banned in never
                      if _within(target, banned) and not _within(target, part)]
    assert not wrong, wrong


def test_windows_dialogs_and_tray_use_only_the_cores_vocabulary() -> None:
    wrong = []
    for name, path in MODULES.items():
        if not name.startswith(UI_PARTS_ON_THE_BRIDGE):
            continue
        for module, imported in _imported(path, name):
            if not _within(module, "app.core"):
                continue
            allowed = UI_VOCABULARY.get(module)
            if allowed is None or (allowed != "*" and imported not in allowed):
                wrong.append(f"{name} imports {module}{'.' + imported if imported else ''}: "
                             "what acts goes through app.ui.bridge")
    assert not wrong, wrong


def test_no_module_over_700_lines() -> None:
    long = {str(p.relative_to(APP.parent)): n for p in APP.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_no_package_over_15_modules_and_each_says_what_it_is_for() -> None:
    crowded, silent = {}, []
    for init in APP.rglob("__init__.py"):
        modules = [p for p in init.parent.glob("*.py") if p.name != "__init__.py"]
        if len(modules) > MAX_MODULES:
            crowded[str(init.parent.relative_to(APP.parent))] = len(modules)
        if ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) is None:
            silent.append(str(init.relative_to(APP.parent)))
    assert not crowded, crowded
    assert not silent, silent
