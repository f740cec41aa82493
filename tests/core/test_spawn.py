"""One helper for the keyword arguments a child process gets on this OS (app/core/spawn.py), and
a scan of ``app/`` that every ``subprocess`` and ``asyncio.create_subprocess_*`` call passes them,
so that no child opens a console window on Windows.

``CREATE_NO_WINDOW`` is 0x08000000 (Microsoft's "Process Creation Flags",
https://learn.microsoft.com/en-us/windows/win32/procthread/process-creation-flags).
"""

from __future__ import annotations

import ast
from pathlib import Path

from app.core import spawn

APP = Path(__file__).resolve().parents[2] / "app"
SUBPROCESS_CALLS = {("subprocess", name) for name in ("run", "Popen", "call", "check_call", "check_output")} | {
    ("asyncio", "create_subprocess_exec"), ("asyncio", "create_subprocess_shell")}


def test_windows_children_get_no_console_and_posix_ones_what_they_ask_for() -> None:
    assert spawn.CREATE_NO_WINDOW == 0x08000000
    assert spawn.child_options(windows=True) == {"creationflags": 0x08000000}
    assert spawn.child_options(own_session=True, windows=True) == {"creationflags": 0x08000000}
    assert spawn.child_options(windows=False) == {}
    assert spawn.child_options(own_session=True, windows=False) == {"start_new_session": True}


def test_the_os_is_read_once_at_start_up(monkeypatch) -> None:
    monkeypatch.setattr(spawn, "WINDOWS", True)
    assert spawn.child_options() == {"creationflags": 0x08000000}
    monkeypatch.setattr(spawn, "WINDOWS", False)
    assert spawn.child_options() == {}


def _calls_without_child_options(path: Path) -> list[int]:
    """Lines of the ``subprocess.X(...)`` / ``asyncio.create_subprocess_*(...)`` calls in ``path``
    that pass no ``**child_options(...)``."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and (node.func.value.id, node.func.attr) in SUBPROCESS_CALLS):
            continue
        if not any(k.arg is None and isinstance(k.value, ast.Call) and isinstance(k.value.func, ast.Name)
                   and k.value.func.id == "child_options" for k in node.keywords):
            missing.append(node.lineno)
    return missing


def test_every_child_process_in_app_gets_the_options() -> None:
    """The model servers and the watchdog are started through the process layer
    (tests/core/models/processes checks their flags); every other child is started here."""
    wrong = [f"{path.relative_to(APP.parent).as_posix()}:{line}"
             for path in sorted(APP.rglob("*.py")) for line in _calls_without_child_options(path)]
    assert not wrong, f"a child process without **child_options() (a console window on Windows): {wrong}"


def test_the_scan_finds_a_call_without_the_options(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("import subprocess\nsubprocess.run(['a'])\nsubprocess.run(['b'], **child_options())\n")
    assert _calls_without_child_options(source) == [2]
