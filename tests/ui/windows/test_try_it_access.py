"""The Try it panel from the keyboard, through a screen reader and on a dark theme, with
no model server: its requests go to a port nothing listens on."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible
from PySide6.QtTest import QTest

from app.core.models.backend import free_port
from app.ui.bridge import ManagerBridge
from app.ui.windows.try_it import TryItPanel
from tests.ui.access import (  # noqa: F401 - fixtures
    accessible,
    activate,
    announcements,
    assert_mnemonics,
    dark_theme,
    labelled_by,
    names,
    press_alt,
    tab_walk,
    text_contrast,
)
from tests.ui.helpers import until


def open_panel(start_manager, write_recipe, qtbot, *names: str) -> TryItPanel:
    for name in names:
        write_recipe(name, fake=[], unload_timeout="5m")
    bridge = ManagerBridge(start_manager())
    bridge.api_url = f"http://127.0.0.1:{free_port()}"  # nothing answers there
    panel = TryItPanel(bridge)
    qtbot.addWidget(panel)
    return panel


def test_try_it_keyboard_reaches_every_field_and_sends(loop, start_manager, write_recipe, qtbot) -> None:
    panel = open_panel(start_manager, write_recipe, qtbot, "tiny")
    activate(loop, panel)
    fields = [panel.model_combo, panel.prompt, panel.answer]
    letters = assert_mnemonics(panel, fields, [panel.send_button, panel.stop_button])
    assert "".join(sorted(letters)) == "AMPST"
    # model, prompt, Send, (Stop: greyed out while nothing runs), answer
    order = [panel.model_combo, panel.prompt, panel.send_button, panel.answer]
    assert names(tab_walk(panel.model_combo, 4)) == names(order + [panel.model_combo])
    assert names(tab_walk(panel.answer, 3, back=True)) == names(order[::-1])
    press_alt(panel, "P")
    qtbot.keyClicks(panel.prompt, "Say hello")
    QTest.keyClick(panel.prompt, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # sends
    assert panel.running and panel.stop_button.isEnabled()
    assert names(tab_walk(panel.prompt, 2)) == names([panel.prompt, panel.stop_button, panel.answer])
    loop.run_until_complete(until(lambda: not panel.running, 10, "the request to fail"))
    assert panel.status_label.text().startswith("Could not reach Siesta at ")


def test_try_it_tells_screen_readers_which_model_and_what_happened(loop, start_manager, write_recipe, qtbot,
                                                                   announcements) -> None:
    panel = open_panel(start_manager, write_recipe, qtbot, "qwen", "tiny")
    panel.show()
    # a combo box: its label through Qt's "labelled by" relation, its name for the platforms that use one
    assert "Model:" in labelled_by(panel.model_combo) and panel.model_combo.accessibleName() == "Model to try"
    assert accessible(panel.prompt) == "Prompt for qwen"
    assert accessible(panel.answer) == "Answer from qwen"
    panel.model_combo.setCurrentText("tiny")
    assert (accessible(panel.prompt), accessible(panel.answer)) == ("Prompt for tiny", "Answer from tiny")
    assert accessible(panel.timeout_label) == panel.timeout_label.text() != ""
    panel.prompt.setPlainText("Say hello")
    panel.send_button.click()
    # the status line: its name says what it is, its description is what it says now
    assert accessible(panel.status_label) == "Try it status"
    assert accessible(panel.status_label, QAccessible.Text.Description) == panel.status_label.text() != ""
    loop.run_until_complete(until(lambda: not panel.running, 10, "the request to fail"))
    status = panel.status_label.text()
    assert status.startswith("Could not reach Siesta at ")
    assert accessible(panel.status_label, QAccessible.Text.Description) == status
    assert announcements == [status]


def test_try_it_hint_and_error_are_readable_on_a_dark_theme(loop, start_manager, write_recipe, qtbot,
                                                            dark_theme) -> None:
    panel = open_panel(start_manager, write_recipe, qtbot, "tiny")
    panel.show()
    assert panel.timeout_label.text().startswith("unloads 5:00 after the last request")
    assert text_contrast(panel.timeout_label) >= 3.0  # a hint: 3:1
    panel.prompt.setPlainText("Say hello")
    panel.send()
    loop.run_until_complete(until(lambda: not panel.running, 10, "the request to fail"))
    assert panel.status_label.text().startswith("Could not reach Siesta at ")
    assert text_contrast(panel.status_label) >= 4.5
