"""The Models window's room for its table, its Today column (each model's day from the history)
and the memory given back (issue 29)."""

from __future__ import annotations

import time

from app.ui.bridge import ManagerBridge
from app.ui.windows import models as models_window
from app.ui.windows.day_bar import SHARES_ROLE
from app.ui.windows.models import COL_STATE, COL_TODAY, ModelsWindow
from tests.ui.helpers import FakeShell, until


def make_window(manager, qtbot, *, has_tray: bool = True) -> ModelsWindow:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    window = ModelsWindow(bridge, FakeShell(has_tray=has_tray))
    qtbot.addWidget(window)
    return window


def cell(window: ModelsWindow, name: str, column: int):
    return window.table.item(list(window.rows).index(name), column)


def rows_in_view(window: ModelsWindow) -> int:
    """Whole rows the table shows without scrolling."""
    table = window.table
    return sum(1 for row in range(table.rowCount())
               if table.visualRect(table.model().index(row, 0)).bottom() < table.viewport().height())


def test_eight_models_show_without_scrolling_at_the_default_size(loop, start_manager, write_recipe, qtbot) -> None:
    for i in range(8):
        write_recipe(f"model{i}", fake=[])
    manager = start_manager()
    window = make_window(manager, qtbot)
    window.show()
    qtbot.waitExposed(window)
    assert (window.width(), window.height()) == models_window.DEFAULT_SIZE
    assert window.table.rowCount() == 8
    assert rows_in_view(window) == 8
    assert not window.table.verticalScrollBar().isVisible()
    assert window.try_it.isVisible() and window.try_it.height() >= window.try_it.minimumSizeHint().height()


def test_a_few_models_leave_the_rest_to_try_it(loop, start_manager, write_recipe, qtbot) -> None:
    for name in ("qwen", "tiny"):
        write_recipe(name, fake=[])
    manager = start_manager()
    window = make_window(manager, qtbot)
    window.show()
    qtbot.waitExposed(window)
    assert rows_in_view(window) == 2
    assert window.try_it.height() > window.table.height()


def test_today_column_from_the_history_and_given_back_in_its_tooltip(loop, start_manager, write_recipe,
                                                                     qtbot) -> None:
    write_recipe("tiny", fake=[])
    write_recipe("spare", fake=[])
    manager = start_manager()
    window = make_window(manager, qtbot)
    window.show()
    loop.run_until_complete(until(lambda: cell(window, "spare", COL_TODAY).text() == "not loaded", 5))
    assert window.table.horizontalHeaderItem(COL_TODAY).text() == "Today"

    loop.run_until_complete(manager.load("tiny"))
    loop.run_until_complete(manager.unload("tiny"))
    loop.run_until_complete(until(lambda: cell(window, "tiny", COL_TODAY).text().startswith("1×, "), 5,
                                  "the load counted"))
    item = cell(window, "tiny", COL_TODAY)
    assert item.text().endswith(" in memory")
    assert item.toolTip().startswith("Today: loaded 1×, ") and "of the day in memory" in item.toolTip()
    assert item.data(SHARES_ROLE)[1] > 0 and cell(window, "spare", COL_TODAY).data(SHARES_ROLE) is None

    # Memory given back: the line above the table, and a model's share in its tooltip.
    gb_hour = 2**30 * 3600
    bridge = window.bridge
    bridge.given_back_summary = lambda: {"today": 41 * gb_hour, "total": 310 * gb_hour,
                                         "since": time.time() - 60}
    bridge.models["tiny"] = {**bridge.models["tiny"], "given_back": 2.1 * gb_hour}
    window.refresh()
    assert window.given_back_label.isVisible()
    assert window.given_back_label.text().startswith("Gave back 41.0 GB·h today, 310.0 GB·h since ")
    assert cell(window, "tiny", COL_TODAY).toolTip().endswith("; gave back 2.1 GB·h today")


def test_the_today_column_says_when_the_history_is_unavailable(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    window = make_window(manager, qtbot)
    window.bridge.history, window.bridge.history_problem = None, "HTTP 404: not found"
    window.bridge.historyChanged.emit()
    item = cell(window, "tiny", COL_TODAY)
    assert item.text() == ""
    assert item.toolTip() == "The history is not available from this Siesta: HTTP 404: not found"


def test_a_load_shows_its_progress_each_second(loop, start_manager, write_recipe, qtbot, monkeypatch) -> None:
    write_recipe("big", fake=[])
    manager = start_manager()
    window = make_window(manager, qtbot)
    window.show()
    window.ticker.stop()  # ticked by hand, on its own clock
    now = [time.time()]
    monkeypatch.setattr(window.bridge, "now", lambda: now[0])
    window.bridge.models["big"] = {**window.bridge.models["big"], "state": "loading", "loading_since": now[0] - 4,
                                   "last_load_seconds": 20.0}
    window.refresh()
    assert cell(window, "big", COL_STATE).text() == "loading... ~20%"
    now[0] += 4
    window._tick()
    assert cell(window, "big", COL_STATE).text() == "loading... ~40%"
    window.bridge.models["big"]["last_load_seconds"] = None  # a first load: its seconds
    window._tick()
    assert cell(window, "big", COL_STATE).text() == "loading... 8 s"
