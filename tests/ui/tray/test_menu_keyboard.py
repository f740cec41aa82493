"""The tray menu from the keyboard and through a screen reader: each entry has its own
letter in its menu (and that key triggers it in the open menu), a model's submenu and its
timeout presets too; a model's line, countdown included, is what a screen reader reads."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QAccessible, QAction
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMenu

from app.ui.bridge import ManagerBridge
from app.ui.tray.menu import TrayMenu
from tests.ui.access import mnemonic
from tests.ui.helpers import FakeShell, plain, until


def make_tray(manager, shell: FakeShell) -> TrayMenu:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    return TrayMenu(bridge, shell)


def letters(actions: list[QAction]) -> list[str]:
    return [mnemonic(a.text()) for a in actions]


def shown_letters(menu: QMenu) -> list[str]:
    """The letters of the entries ``menu`` shows now."""
    return [letter for letter in letters([a for a in menu.actions() if a.isVisible() and not a.isSeparator()])
            if letter]


def press(menu: QMenu, letter: str) -> None:
    """Opens ``menu`` (if it is not open) and presses ``letter`` in it, as a keyboard user does."""
    if not menu.isVisible():
        menu.popup(QPoint(0, 0))
    QTest.keyClick(menu, Qt.Key(ord(letter)))


def test_every_tray_menu_entry_has_its_own_letter_and_the_letter_triggers_it(loop, start_manager, write_recipe,
                                                                            opened) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("spare", fake=[])
    manager = start_manager()
    shell = FakeShell()
    tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    static = [tray.install_action, tray.load_menu.menuAction(), tray.unload_all_action, tray.discover_action,
              tray.download_action, tray.import_action, tray.window_action, tray.settings_action, tray.logs_action,
              tray.copy_action, tray.quit_action]
    assert all(letters(static)), [a.text() for a in static]
    assert sorted(letters(static)) == sorted(set(letters(static)))  # hidden ones included: none shares a letter
    shown = shown_letters(tray.menu)
    assert sorted(shown) == sorted(set(shown)) == sorted(set(letters(static)) - {mnemonic(tray.install_action.text())})

    for words, done in (("Models window...", "window"), ("Settings...", "settings"), ("Find models...", "discover"),
                        ("Download model...", "download"), ("Import configuration...", "import"), ("Quit", "quit")):
        action = next(a for a in static if plain(a.text()) == words)
        press(tray.menu, mnemonic(action.text()))
        assert shell.calls[-1:] == [done], (words, shell.calls)
        assert not tray.menu.isVisible()
    press(tray.menu, mnemonic(tray.logs_action.text()))
    press(tray.menu, mnemonic(tray.copy_action.text()))
    assert opened == [("folder", manager.paths.log_dir), ("copy", "http://127.0.0.1:8777/v1")]

    # Load model opens its submenu, its first model chosen: Return loads it.
    press(tray.menu, mnemonic(tray.load_menu.menuAction().text()))
    assert tray.load_menu.isVisible()
    QTest.keyClick(tray.load_menu, Qt.Key.Key_Return)
    loop.run_until_complete(until(lambda: manager.get("spare").state == "ready", 10, "spare to load"))
    press(tray.menu, mnemonic(tray.unload_all_action.text()))
    loop.run_until_complete(until(lambda: all(s["state"] == "unloaded" for s in manager.snapshots()), 10,
                                  "Unload all"))


def test_a_models_submenu_and_its_timeout_presets_have_their_own_letters(loop, start_manager, write_recipe,
                                                                         opened) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    shell = FakeShell()
    tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    entry = tray.entries["tiny"]
    entry.menu.popup(QPoint(0, 0))
    actions = [entry.unload_action, entry.load_action, *entry.timeout_actions.values(), entry.show_log_action,
               entry.log_action, entry.settings_action]
    assert all(letters(actions)), [a.text() for a in actions]
    assert sorted(letters(actions)) == sorted(set(letters(actions)))
    assert [plain(a.text()) for a in entry.timeout_actions.values()] == [
        "Keep loaded", "1 min", "5 min", "15 min", "1 h", "Use global (5 min)"]
    assert mnemonic(entry.timeout_actions[60.0].text()) == "1" and mnemonic(entry.timeout_actions[300.0].text()) == "5"
    shown = shown_letters(entry.menu)
    assert sorted(shown) == sorted(set(shown))

    press(entry.menu, mnemonic(entry.timeout_actions["never"].text()))
    loop.run_until_complete(until(lambda: 'unload_timeout = "never"' in recipe.read_text(), 5, "Keep loaded"))
    loop.run_until_complete(until(lambda: not tray.bridge.pending_tasks, 5, "the action to finish"))
    tray.refresh()
    press(entry.menu, "1")
    loop.run_until_complete(until(lambda: 'unload_timeout = "1m"' in recipe.read_text(), 5, "1 min"))
    loop.run_until_complete(until(lambda: not tray.bridge.pending_tasks, 5, "the action to finish"))
    press(entry.menu, mnemonic(entry.show_log_action.text()))
    assert shell.calls == ["log tiny"]
    press(entry.menu, mnemonic(entry.log_action.text()))
    assert opened == [("file", Path(manager.paths.model_log("tiny")))]
    press(entry.menu, mnemonic(entry.settings_action.text()))
    assert shell.calls == ["log tiny", "model settings tiny"]
    press(entry.menu, mnemonic(entry.unload_action.text()))
    loop.run_until_complete(until(lambda: manager.get("tiny").pid is None, 10, "Unload now"))
    tray.menu.hide()


def menu_item_names(menu: QMenu) -> list[str]:
    """What a screen reader reads for each entry of ``menu`` (Qt's accessible menu items)."""
    interface = QAccessible.queryAccessibleInterface(menu)
    return [interface.child(i).text(QAccessible.Text.Name) for i in range(interface.childCount())]


def test_a_screen_reader_reads_each_models_line_with_its_live_countdown(loop, start_manager, write_recipe) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    tray = make_tray(manager, FakeShell())
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    entry = tray.entries["tiny"]
    first = entry.action.text()
    assert "idle, unloads in " in first and first in menu_item_names(tray.menu)
    loop.run_until_complete(until(lambda: entry.action.text() != first, 3, "the countdown to tick"))
    assert entry.action.text() in menu_item_names(tray.menu) and first not in menu_item_names(tray.menu)
    # an entry's letter is underlined, not read out as "&"
    assert "Unload all" in menu_item_names(tray.menu) and "Quit" in menu_item_names(tray.menu)
    tray.menu.hide()
