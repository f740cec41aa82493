"""A page the front door refused: the tray says so once per origin, and its Allow (a click
on the message, or the menu entry) adds the origin to ``allowed_origins`` through the core."""

from __future__ import annotations

import tomllib

from PySide6.QtCore import QPoint

from app.ui.bridge import ManagerBridge
from app.ui.tray.menu import TrayMenu
from tests.ui.helpers import plain, until

PAGE = "http://localhost:5173"


def make_tray(manager, shell) -> tuple[ManagerBridge, TrayMenu]:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    return bridge, TrayMenu(bridge, shell)


def allow_entries(tray: TrayMenu) -> list[str]:
    return [plain(a.text()) for a in tray.menu.actions() if plain(a.text()).startswith("Allow page at")]


def test_a_refused_page_is_told_once_and_a_click_allows_it(loop, start_manager, shell, paths) -> None:
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    for _ in range(3):
        manager.origin_refused(PAGE)  # what the front door's guard calls on each refusal
    assert tray.last_message is not None
    message = tray.last_message[1]
    assert f"A page at {PAGE} tried to use Siesta" in message
    assert allow_entries(tray) == [f"Allow page at {PAGE}"]
    tray.last_message = None
    manager.origin_refused(PAGE)
    assert tray.last_message is None  # once per origin

    tray._on_message_clicked()  # the user clicks the notification
    loop.run_until_complete(until(lambda: manager.settings.allowed_origins == [PAGE], 5, "the origin allowed"))
    loop.run_until_complete(until(lambda: not bridge.pending_tasks, 5, "the action to finish"))
    assert tomllib.loads(paths.settings_file.read_text())["allowed_origins"] == [PAGE]
    assert allow_entries(tray) == []
    assert tray.last_message is not None and tray.last_message[0] == "Page allowed"
    loop.run_until_complete(bridge.close())


def test_the_menu_entry_allows_a_page_and_another_page_is_told_too(loop, start_manager, shell, paths) -> None:
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    manager.origin_refused(PAGE)
    manager.origin_refused("vscode-webview://abc")
    assert tray.last_message is not None and "vscode-webview://abc" in tray.last_message[1]
    tray.menu.popup(QPoint(0, 0))
    assert allow_entries(tray) == [f"Allow page at {PAGE}", "Allow page at vscode-webview://abc"]
    entry = next(a for a in tray.menu.actions() if PAGE in a.text())
    assert entry.isVisible() and entry.isEnabled()
    entry.trigger()
    loop.run_until_complete(until(lambda: allow_entries(tray) == ["Allow page at vscode-webview://abc"], 5,
                                  "the entry to go"))
    assert manager.settings.allowed_origins == [PAGE]
    tray.menu.hide()
    loop.run_until_complete(bridge.close())


def test_a_failed_allow_is_reported_and_its_entry_stays(loop, start_manager, shell, monkeypatch) -> None:
    monkeypatch.setenv("SIESTA_ALLOWED_ORIGINS", "app://obsidian.md")  # fixed by the environment
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    manager.origin_refused(PAGE)
    tray._on_message_clicked()
    loop.run_until_complete(until(lambda: not bridge.pending_tasks, 5, "the action to finish"))
    assert tray.last_message is not None and "SIESTA_ALLOWED_ORIGINS" in tray.last_message[1]
    assert allow_entries(tray) == [f"Allow page at {PAGE}"]
    assert manager.settings.allowed_origins == ["app://obsidian.md"]
    loop.run_until_complete(bridge.close())
