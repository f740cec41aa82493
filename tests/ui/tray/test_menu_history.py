"""The tray menu's words from the history (issue 29): a load's progress against the model's
last load time, and the day's memory given back in one line above the Models window."""

from __future__ import annotations

import re
import time

from PySide6.QtCore import QPoint

from app.ui.bridge import ManagerBridge
from app.ui.tray.menu import TrayMenu
from tests.ui.helpers import next_event, until


def make_tray(manager, shell) -> tuple[ManagerBridge, TrayMenu]:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    return bridge, TrayMenu(bridge, shell)


def test_a_second_load_shows_its_share_of_the_last_load_time(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("slow", fake=["--startup-delay", "1.5"])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    loop.run_until_complete(manager.load("slow"))  # the first load: its time is kept
    loop.run_until_complete(manager.unload("slow"))
    assert bridge.snapshot("slow")["last_load_seconds"] >= 1.0
    tray.menu.popup(QPoint(0, 0))
    next(a for a in tray.load_menu.actions() if a.text() == "slow").trigger()
    label = loop.run_until_complete(until(lambda: "slow" in tray.entries and tray.entries["slow"].action.text(), 5))
    assert re.fullmatch(r"slow: loading\.\.\. ~\d{1,2}%", label), label
    loop.run_until_complete(until(lambda: tray.entries["slow"].action.text() != label, 3, "the share to tick"))
    assert re.fullmatch(r"slow: loading\.\.\. ~\d{1,2}%", tray.entries["slow"].action.text())
    loop.run_until_complete(next_event(manager, "slow", "loaded"))
    tray.menu.hide()


def test_the_days_memory_given_back_in_one_line(loop, start_manager, write_recipe, shell) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    bridge, tray = make_tray(manager, shell)
    tray.menu.popup(QPoint(0, 0))
    assert not tray.given_back_action.isVisible()  # nothing given back yet: no line
    gb_hour = 2**30 * 3600
    bridge.given_back_summary = lambda: {"today": 41 * gb_hour, "total": 310 * gb_hour, "since": time.time() - 60}
    tray.refresh(fresh=True)
    assert tray.given_back_action.isVisible() and not tray.given_back_action.isEnabled()
    assert tray.given_back_action.text() == "Gave back 41.0 GB·h of memory today"
    assert tray.given_back_action.toolTip().startswith("Gave back 41.0 GB·h today, 310.0 GB·h since ")
    actions = tray.menu.actions()
    assert actions.index(tray.given_back_action) + 1 == actions.index(tray.window_action)
    tray.menu.hide()
