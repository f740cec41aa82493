"""MenuWatch on its own: a menu shown as a widget is open until aboutToHide however long
that takes; one that is never shown here (a D-Bus tray draws it) counts as closed a while
after the last sign of it, and opens again at the next sign. The real D-Bus path, with a
panel on a session bus, is tests/ui/tray/test_tray_sni.py."""

from __future__ import annotations

import asyncio
import time

from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QMenu

from app.ui.tray.menu_watch import MenuWatch
from tests.ui.helpers import until

LIMIT = 0.1


def watched(limit: float = LIMIT) -> tuple[QMenu, QMenu, MenuWatch, list[str]]:
    menu = QMenu()
    submenu = menu.addMenu("model")
    submenu.addAction("Unload now")
    menu.addAction("Settings...")
    watch = MenuWatch(menu, unseen_limit=limit)
    seen: list[str] = []
    watch.opened.connect(lambda: seen.append("opened"))
    watch.closed.connect(lambda: seen.append("closed"))
    return menu, submenu, watch, seen


def test_a_menu_shown_as_a_widget_stays_open_until_it_hides(loop) -> None:
    menu, _submenu, watch, seen = watched()
    deadlines: list[float] = []
    watch._deadline.timeout.connect(lambda: deadlines.append(time.monotonic()))
    menu.popup(QPoint(0, 0))
    assert menu.isVisible() and seen == ["opened"]
    loop.run_until_complete(until(lambda: len(deadlines) >= 3, 5, "the limit to pass three times"))
    assert watch.is_open and seen == ["opened"]  # shown here: only aboutToHide closes it
    menu.hide()
    assert seen == ["opened", "closed"] and not watch.is_open
    assert not watch._deadline.isActive()  # no timer runs with the menu closed


def test_a_menu_drawn_elsewhere_closes_after_the_limit_and_signs_keep_it_open(loop) -> None:
    limit = 0.5  # hovers come 5 times as often: a busy machine's pauses do not reach it
    menu, submenu, watch, seen = watched(limit)
    menu.aboutToShow.emit()  # what Qt does on a D-Bus tray's AboutToShow; the widget stays hidden
    opened_at = time.monotonic()
    assert seen == ["opened"] and not menu.isVisible()
    loop.run_until_complete(until(lambda: seen == ["opened", "closed"], 5, "the limit to close it"))
    assert time.monotonic() - opened_at >= limit * 0.9

    submenu.aboutToShow.emit()  # a submenu opened: the menu was open after all
    assert seen == ["opened", "closed", "opened"]

    async def hover_for(seconds: float) -> None:
        # Time passing is the point here: a hover every fifth of the limit, for three limits.
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            menu.hovered.emit(menu.actions()[-1])
            await asyncio.sleep(limit / 5)

    loop.run_until_complete(hover_for(limit * 3))
    assert seen == ["opened", "closed", "opened"] and watch.is_open

    menu.aboutToHide.emit()  # the host said "closed"
    assert seen[-1] == "closed" and not watch._deadline.isActive()


def test_a_submenu_added_later_is_watched_too(loop) -> None:
    menu, _submenu, watch, seen = watched(limit=60)
    menu.aboutToShow.emit()
    later = menu.addMenu("another model")
    menu.hovered.emit(later.menuAction())  # hovering its line finds it
    menu.aboutToHide.emit()
    later.aboutToShow.emit()
    assert seen == ["opened", "closed", "opened"]
    menu.aboutToHide.emit()
