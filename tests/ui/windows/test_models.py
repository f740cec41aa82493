"""The Models window, Siesta's face where there is no system tray."""

from __future__ import annotations

import re

from PySide6.QtCore import QTimer

from app.ui.bridge import ManagerBridge
from app.ui.windows.models import COL_MEMORY, COL_STATE, ModelsWindow
from tests.ui.helpers import FakeShell, until


def make_window(manager, shell: FakeShell, qtbot) -> ModelsWindow:
    bridge = ManagerBridge(manager)
    bridge.api_url = "http://127.0.0.1:8777"
    window = ModelsWindow(bridge, shell)
    qtbot.addWidget(window)
    return window


def cell(window: ModelsWindow, name: str, column: int) -> str:
    row = list(window.rows).index(name)
    return window.table.item(row, column).text()


def test_lists_every_recipe_with_live_countdowns_and_controls(loop, start_manager, write_recipe, qtbot) -> None:
    recipe = write_recipe("tiny", fake=[], unload_timeout="5m")
    write_recipe("qwen", fake=[])
    manager = start_manager()
    shell = FakeShell(has_tray=False)
    window = make_window(manager, shell, qtbot)
    window.show()
    assert list(window.rows) == ["qwen", "tiny"]
    assert cell(window, "tiny", COL_STATE) == "not loaded"
    assert window.rows["tiny"].action_button.text() == "Load"
    assert window.rows["tiny"].timeout_combo.currentText() == "5 min"
    assert window.rows["qwen"].timeout_combo.currentText() == "Use global (5 min)"
    assert "http://127.0.0.1:8777/v1" in window.url_label.text()

    window.rows["tiny"].action_button.click()
    loop.run_until_complete(until(lambda: cell(window, "tiny", COL_STATE).startswith("idle, unloads in"), 10))
    assert re.fullmatch(r"idle, unloads in (5:00|4:5\d)", cell(window, "tiny", COL_STATE))
    # memory is measured off the loop just after the load; its event ("measured") updates the row
    loop.run_until_complete(until(lambda: re.fullmatch(r"\d+(\.\d)? MB", cell(window, "tiny", COL_MEMORY)), 5))
    assert window.rows["tiny"].action_button.text() == "Unload"
    first = cell(window, "tiny", COL_STATE)
    loop.run_until_complete(until(lambda: cell(window, "tiny", COL_STATE) != first, 3, "the countdown to tick"))

    combo = window.rows["tiny"].timeout_combo
    combo.activated.emit(combo.findText("Keep loaded"))
    loop.run_until_complete(until(lambda: 'unload_timeout = "never"' in recipe.read_text(), 5))
    loop.run_until_complete(until(lambda: cell(window, "tiny", COL_STATE) == "kept loaded", 5))

    window.rows["tiny"].action_button.click()
    loop.run_until_complete(until(lambda: cell(window, "tiny", COL_STATE) == "not loaded", 10))
    assert manager.get("tiny").pid is None


def test_ticks_only_while_visible(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    window = make_window(manager, FakeShell(has_tray=True), qtbot)
    assert not window.ticker.active
    window.show()
    assert window.ticker.active
    window.hide()
    assert not window.ticker.active
    assert not [t for t in window.findChildren(QTimer) if t.isActive()]


def test_closing_quits_only_without_a_tray(loop, start_manager, qtbot) -> None:
    manager = start_manager()
    with_tray = FakeShell(has_tray=True)
    window = make_window(manager, with_tray, qtbot)
    window.show()
    window.close()
    assert not window.isVisible()
    assert with_tray.calls == []

    without_tray = FakeShell(has_tray=False)
    window = make_window(manager, without_tray, qtbot)
    window.show()
    assert window.empty_label.isVisible()  # no recipes yet: says how to add one
    window.close()
    assert without_tray.calls == ["quit"]


def test_a_failed_action_is_shown_in_the_window(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("broken", fake=["--exit-at-start", "1"])
    manager = start_manager()
    window = make_window(manager, FakeShell(has_tray=False), qtbot)
    window.show()
    window.rows["broken"].action_button.click()
    loop.run_until_complete(until(lambda: window.message_label.isVisible(), 10, "the error"))
    assert window.message_label.text().startswith("Could not load broken: ")
    assert cell(window, "broken", COL_STATE) == "load failed: exit 1"
    assert window.rows["broken"].action_button.text() == "Dismiss"


def test_a_tick_rewrites_only_the_countdowns_and_reads_memory_every_tenth(loop, start_manager, write_recipe,
                                                                           qtbot, monkeypatch) -> None:
    """The once-a-second tick is what an open window costs while nothing happens: it must not
    re-read every model, rewrite every row or look at llama-server's files each second."""
    from app.ui.windows import models as models_window

    write_recipe("tiny", fake=[], unload_timeout="5m")
    manager = start_manager()
    window = make_window(manager, FakeShell(has_tray=False), qtbot)
    window.show()
    loop.run_until_complete(manager.load("tiny"))
    loop.run_until_complete(until(lambda: cell(window, "tiny", COL_STATE).startswith("idle, unloads in"), 10))
    window.ticker.stop()  # the test ticks by hand, with its own clock
    reads, engine_checks = [], []
    real_snapshots = window.bridge.snapshots
    monkeypatch.setattr(window.bridge, "snapshots", lambda **kw: reads.append(kw) or real_snapshots(**kw))
    monkeypatch.setattr(window.bridge, "engine_status", lambda: engine_checks.append(1))
    later = [window.bridge.now()]
    monkeypatch.setattr(window.bridge, "now", lambda: later[0])
    window._ticks = 0
    for second in range(1, models_window.MEMORY_EVERY):
        later[0] += 1.0
        before = cell(window, "tiny", COL_STATE)
        window._tick()
        assert cell(window, "tiny", COL_STATE) != before  # the countdown moved
    assert reads == [] and engine_checks == []
    later[0] += 1.0
    window._tick()  # the tenth: memory figures are read again
    assert reads == [{"fresh": True}]
