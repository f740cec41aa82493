"""The tray menu against a real manager running fake-backend models."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from PySide6.QtCore import QPoint, QTimer

from app.ui import text
from app.ui.bridge import ManagerBridge
from app.ui.tray.menu import TrayMenu
from tests.portable import kill_hard
from tests.ui.helpers import FakeShell, next_event, plain, until

COUNTDOWN = re.compile(r"tiny \(\d+(\.\d)? MB\): idle, unloads in (5:00|4:5\d)")


def model_labels(tray: TrayMenu) -> list[str]:
    return [entry.action.text() for entry in tray.entries.values()]


def make_tray(manager, shell: FakeShell) -> tuple[ManagerBridge, TrayMenu]:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    return bridge, TrayMenu(bridge, shell)


def test_menu_lists_loaded_models_and_ticks_only_while_open(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("qwen", fake=[], unload_timeout="never")
    write_recipe("spare", fake=[])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    loop.run_until_complete(asyncio.gather(manager.load("tiny"), manager.load("qwen")))

    tray.menu.popup(QPoint(0, 0))
    assert tray.menu.isVisible()
    labels = model_labels(tray)
    assert len(labels) == 2
    assert re.fullmatch(r"qwen \(\d+(\.\d)? MB\): kept loaded", labels[0]), labels
    assert COUNTDOWN.fullmatch(labels[1]), labels
    assert tray.ticker.active
    assert [a.text() for a in tray.load_menu.actions()] == ["spare"]
    assert tray.copy_action.text() == "&Copy API URL (http://127.0.0.1:8777/v1)"
    assert tray.empty_action.isVisible() is False

    first = tray.entries["tiny"].action.text()
    loop.run_until_complete(until(lambda: tray.entries["tiny"].action.text() != first, 3, "the countdown to tick"))
    assert COUNTDOWN.fullmatch(tray.entries["tiny"].action.text())

    tray.menu.hide()
    assert not tray.ticker.active
    assert not [t for t in tray.findChildren(QTimer) if t.isActive()], "a timer runs with the menu closed"
    frozen = tray.entries["tiny"].action.text()
    loop.run_until_complete(asyncio.sleep(1.1))  # a second passes with nothing visible: nothing ticks
    assert tray.entries["tiny"].action.text() == frozen


def test_submenu_timeout_presets_persist_to_the_recipe(loop, start_manager, write_recipe, shell) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    comment = "# recipe tiny written by a test"
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    entry = tray.entries["tiny"]
    assert entry.timeout_actions[300.0].isChecked()
    assert [plain(a.text()) for a in entry.menu.actions() if a.isCheckable() and a.isVisible()] == [
        "Keep loaded", "1 min", "5 min", "15 min", "1 h", "Use global (5 min)"]

    async def choose(key, expect_line):
        entry.timeout_actions[key].trigger()
        await until(lambda: expect_line(recipe.read_text()), 5, f"the recipe to say {key}")
        await until(lambda: not bridge.pending_tasks, 5, "the action to finish")

    loop.run_until_complete(choose(900.0, lambda t: 'unload_timeout = "15m"' in t))
    assert recipe.read_text().startswith(comment)
    assert entry.timeout_actions[900.0].isChecked()
    assert re.search(r"unloads in (15:00|14:5\d)$", entry.action.text())

    loop.run_until_complete(choose("never", lambda t: 'unload_timeout = "never"' in t))
    assert entry.action.text().endswith(": kept loaded")
    assert manager.get("tiny").unload_at is None

    loop.run_until_complete(choose("default", lambda t: "unload_timeout" not in t))
    assert recipe.read_text().startswith(comment)
    assert entry.timeout_actions["default"].isChecked()
    assert manager.snapshots()[0]["timeout_source"] == "global"

    # a value typed into the recipe by hand shows as a checked "Custom" entry
    loop.run_until_complete(manager.set_model_timeout("tiny", 420.0))
    tray.refresh()
    assert entry.custom_action.isVisible() and entry.custom_action.text() == "Custom (7 min)"
    assert entry.custom_action.isChecked()
    assert not any(a.isChecked() for a in entry.timeout_actions.values())
    tray.menu.hide()


def test_unload_now_and_load_from_the_menu(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("tiny", fake=[])
    write_recipe("slow", fake=["--startup-delay", "1.2"])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    assert [a.text() for a in tray.load_menu.actions()] == ["slow"]

    tray.entries["tiny"].unload_action.trigger()
    loop.run_until_complete(until(lambda: not tray.entries, 10, "tiny to leave the menu"))
    assert tray.empty_action.isVisible()
    assert not tray.unload_all_action.isEnabled()
    assert sorted(a.text() for a in tray.load_menu.actions()) == ["slow", "tiny"]

    slow = next(a for a in tray.load_menu.actions() if a.text() == "slow")
    slow.trigger()
    label = loop.run_until_complete(until(lambda: "slow" in tray.entries and tray.entries["slow"].action.text(), 5))
    assert label == "slow: loading... 0 s"
    assert tray.entries["slow"].unload_action.text() == "&Cancel loading"
    assert tray.icon_state == text.ICON_BUSY
    loop.run_until_complete(until(lambda: tray.entries["slow"].action.text() == "slow: loading... 1 s", 3,
                                  "the loading seconds to tick"))
    loop.run_until_complete(next_event(manager, "slow", "loaded"))
    assert tray.icon_state == text.ICON_LOADED
    tray.menu.hide()
    tray.unload_all_action.trigger()
    loop.run_until_complete(until(lambda: all(s["state"] == "unloaded" for s in manager.snapshots()), 10))
    assert tray.icon_state == text.ICON_EMPTY


def test_icon_and_tooltip_follow_events(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("tiny", fake=[], unload_timeout="10m")
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    assert tray.icon.toolTip() == "Siesta: no models loaded"
    assert tray.icon_state == text.ICON_EMPTY
    loop.run_until_complete(manager.load("tiny"))
    assert tray.icon_state == text.ICON_LOADED
    assert re.fullmatch(r"Siesta: 1 model loaded, \d+(\.\d)? MB; tiny unloads at \d\d:\d\d", tray.icon.toolTip())

    lease = loop.run_until_complete(manager.get("tiny").acquire())
    assert tray.icon_state == text.ICON_BUSY
    assert tray.icon.toolTip().endswith("; tiny busy")

    async def release() -> None:
        lease.release()

    loop.run_until_complete(release())
    assert tray.icon_state == text.ICON_LOADED


def test_a_crash_shows_its_exit_code_log_and_notification(loop, start_manager, write_recipe, shell, opened) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("tiny"))
    kill_hard(manager.get("tiny").pid)  # exit 137 on every OS (tests/portable.py)
    loop.run_until_complete(next_event(manager, "tiny", "crashed"))
    assert tray.icon_state == text.ICON_ERROR
    assert tray.last_message == ("tiny crashed", "crashed: exit 137. See its log for details.")

    tray.menu.popup(QPoint(0, 0))
    entry = tray.entries["tiny"]
    assert entry.action.text() == "tiny: crashed: exit 137"
    assert entry.load_action.isVisible()
    assert entry.unload_action.text() == "&Dismiss"
    assert entry.log_action.isEnabled()
    entry.log_action.trigger()
    assert opened == [("file", Path(manager.paths.model_log("tiny")))]
    entry.unload_action.trigger()  # dismiss: back to unloaded, the icon clears
    loop.run_until_complete(until(lambda: not tray.entries, 5))
    assert tray.icon_state == text.ICON_EMPTY
    tray.menu.hide()


def test_failed_actions_are_shown_to_the_user(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("broken", fake=["--exit-at-start", "2"])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    tray.menu.popup(QPoint(0, 0))
    next(a for a in tray.load_menu.actions() if a.text() == "broken").trigger()
    loop.run_until_complete(until(lambda: tray.last_message, 10, "an error message"))
    title, message = tray.last_message
    assert title == "Could not load broken"
    assert "broken" in message and "failed to load" in message
    assert tray.entries["broken"].action.text() == "broken: load failed: exit 2"
    tray.menu.hide()


def test_other_menu_entries(loop, start_manager, write_recipe, shell, opened) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    tray.menu.popup(QPoint(0, 0))
    texts = [plain(a.text()) for a in tray.menu.actions() if not a.isSeparator() and a.isVisible()]
    assert texts == ["No models loaded", "Load model", "Unload all", "Find models...", "Download model...",
                     "Import configuration...", "Models window...", "Settings...", "Open logs folder",
                     "Copy API URL (http://127.0.0.1:8777/v1)", "Quit"]
    tray.copy_action.trigger()
    tray.logs_action.trigger()
    tray.settings_action.trigger()
    tray.window_action.trigger()
    tray.discover_action.trigger()
    tray.import_action.trigger()
    tray.quit_action.trigger()
    assert opened == [("copy", "http://127.0.0.1:8777/v1"), ("folder", manager.paths.log_dir)]
    assert shell.calls == ["settings", "window", "discover", "import", "quit"]
    tray.menu.hide()
