"""The log viewer: a model's log in a window that follows new lines, from the tray submenu,
the Models window and a crashed model's notification; the keyboard and what screen readers
are told."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
import shiboken6
from PySide6.QtCore import QPoint
from PySide6.QtWidgets import QApplication

from app.core.models.server_log import BoundedLog
from app.ui.app import SiestaApp
from app.ui.bridge import ManagerBridge
from app.ui.tray.menu import TrayMenu
from app.ui.windows import log_viewer
from app.ui.windows.log_viewer import LogViewer
from app.ui.windows.models import ModelsWindow
from tests.fakes.windows_fs import ReplaceRefusedWhileOpen
from tests.portable import kill_hard
from tests.ui.access import accessible, activate, assert_mnemonics, names, press_alt, tab_walk
from tests.ui.helpers import FakeShell, next_event, until


def open_viewer(manager, qtbot, name: str = "tiny") -> LogViewer:
    viewer = LogViewer(ManagerBridge(manager), name)
    qtbot.dialogs.append(viewer)
    viewer.show()
    return viewer


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(text)


def test_log_view_shows_the_tail_and_follows_appended_lines(loop, start_manager, write_recipe, qtbot, opened) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    log = Path(manager.paths.model_log("tiny"))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("first line\nsecond line\n", encoding="utf-8")
    viewer = open_viewer(manager, qtbot)
    assert viewer.text() == "first line\nsecond line"
    assert viewer.timer.isActive() and viewer.timer.interval() == log_viewer.POLL_MS
    assert viewer.view.isReadOnly() and viewer.view.maximumBlockCount() == log_viewer.MAX_LINES
    assert viewer.view.accessibleName() == "Log of tiny"
    assert str(log) in viewer.path_label.text()

    append(log, "third line\nhalf a ")
    loop.run_until_complete(until(lambda: "third line" in viewer.text(), 5, "the appended line"))
    assert "half a" not in viewer.text()  # a line still being written waits for its end
    append(log, "line\n")
    loop.run_until_complete(until(lambda: viewer.text().endswith("half a line"), 5, "the finished line"))
    assert viewer.at_bottom()

    viewer.open_button.click()
    assert opened == [("file", log)]
    viewer.close_button.click()
    assert not viewer.timer.isActive()


def test_log_view_reads_only_a_bounded_tail_and_keeps_the_users_scroll(loop, start_manager, write_recipe,
                                                                      qtbot) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    log = Path(manager.paths.model_log("tiny"))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {i:06d} " + "x" * 60 + "\n" for i in range(20000)), encoding="utf-8")
    viewer = open_viewer(manager, qtbot)
    shown = viewer.text()
    assert len(shown) <= log_viewer.TAIL_BYTES
    assert shown.startswith("line ") and "line 000000" not in shown  # whole lines, only the end
    assert shown.endswith("line 019999 " + "x" * 60)
    assert viewer.at_bottom()

    bar = viewer.view.verticalScrollBar()
    bar.setValue(bar.maximum() // 2)
    kept = bar.value()
    append(log, "new at the end\n")
    loop.run_until_complete(until(lambda: "new at the end" in viewer.text(), 5, "the appended line"))
    assert bar.value() == kept  # scrolled up by the user: the view stays put
    bar.setValue(bar.maximum())
    append(log, "followed again\n")
    loop.run_until_complete(until(lambda: "followed again" in viewer.text(), 5, "the next line"))
    assert viewer.at_bottom()


def test_log_view_survives_rotation_and_truncation(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    log = Path(manager.paths.model_log("tiny"))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("before rotation\n", encoding="utf-8")
    viewer = open_viewer(manager, qtbot)
    assert viewer.text() == "before rotation"

    # As the backend rotates past 2 MB: the file becomes .1, a new one starts.
    append(log, "last of the old file\n")
    os.replace(log, log.with_suffix(log.suffix + ".1"))
    log.write_text("first of the new file\n", encoding="utf-8")
    loop.run_until_complete(until(lambda: "first of the new file" in viewer.text(), 5, "the rotated file"))
    assert viewer.text().splitlines() == ["before rotation", "last of the old file", "first of the new file"]

    # Truncated in place (shorter than what was read): read again from its start.
    with log.open("w", encoding="utf-8") as fh:
        fh.write("after truncation\n")
    loop.run_until_complete(until(lambda: "after truncation" in viewer.text(), 5, "the truncated file"))
    assert viewer.follower.restarts == 2

    # Removed for a moment: nothing breaks, and the next file is read from its start.
    log.unlink()
    viewer.poll()
    log.write_text("a brand new log\n", encoding="utf-8")
    loop.run_until_complete(until(lambda: "a brand new log" in viewer.text(), 5, "the new file"))


def held_open(path: Path) -> bool:
    return any(os.path.realpath(f.path) == os.path.realpath(path) for f in psutil.Process().open_files())


def test_the_viewer_holds_no_handle_so_the_log_rotates_while_it_is_open(loop, start_manager, write_recipe, qtbot,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows refuses to move a file another handle holds open (os.replace as
    tests/fakes/windows_fs.py has it): the viewer opens the log only while it reads, so the
    model's log rotates by a move while the window is open, and every line is shown once."""
    replace = ReplaceRefusedWhileOpen()
    monkeypatch.setattr(os, "replace", replace)
    write_recipe("tiny", fake=[])
    manager = start_manager()
    path = Path(manager.paths.model_log("tiny"))
    lines = [f"line {i:02d} " + "x" * 41 for i in range(30)]  # 50 bytes each
    model_log = BoundedLog(path, max_bytes=1000)
    model_log.write(f"{lines[0]}\n".encode())
    viewer = open_viewer(manager, qtbot)
    assert viewer.text() == lines[0]
    for text in lines[1:]:  # past 1000 bytes after line 19: moved to .1, a new file
        model_log.write(f"{text}\n".encode())
    model_log.close()
    assert replace.done == [(str(path), str(path.with_suffix(".log.1")))] and not replace.refused
    loop.run_until_complete(until(lambda: lines[-1] in viewer.text(), 5, "the lines after the rotation"))
    assert viewer.text().splitlines() == lines and viewer.follower.restarts == 1
    assert not held_open(path) and not held_open(path.with_suffix(".log.1"))


def test_log_view_opens_from_the_tray_submenu_window_and_crash_notification(loop, start_manager, write_recipe,
                                                                           qtbot, make_settings, paths) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    shell = FakeShell()
    bridge = ManagerBridge(manager)
    tray = TrayMenu(bridge, shell)
    loop.run_until_complete(manager.load("tiny"))
    tray.menu.popup(QPoint(0, 0))
    entry = tray.entries["tiny"]
    assert entry.show_log_action.isVisible() and entry.show_log_action.isEnabled()
    assert entry.show_log_action.text() == "&Show log..."
    entry.show_log_action.trigger()
    assert shell.calls == ["log tiny"]
    tray.menu.hide()

    window = ModelsWindow(bridge, shell)
    qtbot.addWidget(window)
    window.rows["tiny"].log_button.click()
    assert shell.calls == ["log tiny", "log tiny"]

    kill_hard(manager.get("tiny").pid)
    loop.run_until_complete(next_event(manager, "tiny", "crashed"))
    assert tray.last_message is not None and tray.last_message[0] == "tiny crashed"
    tray.icon.messageClicked.emit()
    assert shell.calls == ["log tiny", "log tiny", "log tiny"]

    # The app keeps one viewer per model and brings it up again.
    siesta = SiestaApp(paths, make_settings())
    siesta.bridge = bridge
    siesta.show_log("tiny")
    viewer = siesta.log_viewers["tiny"]
    qtbot.dialogs.append(viewer)
    assert viewer.isVisible() and viewer.windowTitle() == "Siesta — tiny log"
    loop.run_until_complete(until(viewer.text, 5, "the log's lines"))
    siesta.show_log("tiny")
    assert siesta.log_viewers["tiny"] is viewer
    viewer.close()
    loop.run_until_complete(until(lambda: not shiboken6.isValid(viewer), 5, "the closed viewer to go"))
    siesta.show_log("tiny")
    assert siesta.log_viewers["tiny"] is not viewer
    qtbot.dialogs.append(siesta.log_viewers["tiny"])


def test_log_view_keyboard(loop, start_manager, write_recipe, qtbot, opened) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    log = Path(manager.paths.model_log("tiny"))
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("first line\n", encoding="utf-8")
    viewer = open_viewer(manager, qtbot)
    activate(loop, viewer)
    letters = assert_mnemonics(viewer, [viewer.view], [viewer.open_button, viewer.close_button])
    assert "".join(sorted(letters)) == "CLO"
    order = [viewer.view, viewer.open_button, viewer.close_button]
    assert names(tab_walk(viewer.view, 3)) == names(order + [viewer.view])
    assert names(tab_walk(viewer.close_button, 2, back=True)) == names(order[::-1])
    press_alt(viewer, "O")  # Open in editor (Qt clicks it a moment later)
    loop.run_until_complete(until(lambda: opened, 5, "the editor"))
    assert opened == [("file", log)]
    press_alt(viewer, "L")
    assert QApplication.focusWidget() is viewer.view


def test_log_view_screen_readers_hear_which_model(loop, start_manager, write_recipe, qtbot) -> None:
    write_recipe("tiny", fake=[])
    manager = start_manager()
    log = Path(manager.paths.model_log("tiny"))
    viewer = open_viewer(manager, qtbot)
    assert accessible(viewer.view) == "Log of tiny"
    assert accessible(viewer.open_button) == "Open the log of tiny in an editor"
    assert accessible(viewer.close_button) == "Close the log of tiny"
    # the label's words for the file, kept current: none yet, then the file
    assert accessible(viewer.path_label).endswith(f"{log} (nothing written yet)")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("first line\n", encoding="utf-8")
    loop.run_until_complete(until(lambda: viewer.text() == "first line", 5, "the log"))
    assert accessible(viewer.path_label).endswith(str(log))
