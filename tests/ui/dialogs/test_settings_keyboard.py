"""The Settings dialog with the keyboard alone: Tab and Shift+Tab follow the visual order
(top to bottom, left to right) and come back round, and every field and button has an
Alt+letter of its own. Driven by key events, checking where focus lands."""

from __future__ import annotations

import tomllib

import shiboken6
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractButton, QApplication, QDialogButtonBox, QLabel, QWidget

from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from tests.ui.helpers import until


def open_active(loop, manager, qtbot) -> SettingsDialog:
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    dialog.show()
    dialog.activateWindow()
    loop.run_until_complete(until(dialog.isActiveWindow, 5, "the dialog to be the active window"))
    return dialog


def press(key, modifier=Qt.KeyboardModifier.NoModifier) -> QWidget | None:
    """Sends a key to the widget with focus; returns the widget with focus afterwards."""
    QTest.keyClick(QApplication.focusWidget(), key, modifier)
    return QApplication.focusWidget()


def buttons_left_to_right(dialog: SettingsDialog) -> list[QAbstractButton]:
    return sorted(dialog.buttons.buttons(), key=lambda b: b.mapTo(dialog, QPoint(0, 0)).x())


def expected_order(dialog: SettingsDialog) -> list[QWidget]:
    """Top to bottom, left to right: the global timeout, each model's slider (unless it
    follows the global one) and toggle, Server, Desktop, Memory, Ollama, llama-server, Copy
    diagnostics, the buttons."""
    rows = dialog.rows
    order: list[QWidget] = [dialog.global_slider.slider, dialog.global_edit,
                            rows["alpha"].slider.slider, rows["alpha"].use_global,
                            rows["beta"].use_global,  # on the global timeout: its slider is greyed
                            rows["gamma"].slider.slider, rows["gamma"].use_global,
                            dialog.host_edit, dialog.port_spin, dialog.max_spin,
                            dialog.notify_idle_check, dialog.notify_crash_check, dialog.notify_pressure_check,
                            dialog.autostart_check, dialog.budget_edit, dialog.floor_edit, dialog.ollama_check]
    order += [b for b in (dialog.install_engine_button, dialog.engine_box.update_button, dialog.diagnostics.button)
              if b.isVisible() and b.isEnabled()]
    order += [b for b in buttons_left_to_right(dialog) if b.isEnabled()]
    return order


def test_tab_and_shift_tab_follow_the_visual_order_and_come_round(loop, start_manager, write_recipe,
                                                                   qtbot) -> None:
    write_recipe("gamma", fake=[], unload_timeout="1h")
    write_recipe("beta", fake=[])
    write_recipe("alpha", fake=[], unload_timeout="5m")
    dialog = open_active(loop, start_manager(), qtbot)
    expected = expected_order(dialog)

    expected[0].setFocus(Qt.FocusReason.TabFocusReason)
    seen = [QApplication.focusWidget()]
    for _ in expected:
        seen.append(press(Qt.Key.Key_Tab))
    assert seen == expected + [expected[0]]  # and no stop on anything unseen (the scroll area)

    seen = [QApplication.focusWidget()]
    for _ in expected:
        seen.append(press(Qt.Key.Key_Tab, Qt.KeyboardModifier.ShiftModifier))
    assert seen == [expected[0]] + expected[::-1]


def mnemonic(text: str) -> str:
    return QKeySequence.mnemonic(text).toString()


def test_every_field_and_button_has_an_alt_letter_of_its_own(loop, start_manager, write_recipe, qtbot,
                                                             paths) -> None:
    write_recipe("alpha", fake=[], unload_timeout="5m")
    write_recipe("beta", fake=[])
    dialog = open_active(loop, start_manager(), qtbot)

    shortcuts: dict[str, QWidget] = {}
    for label in dialog.findChildren(QLabel):
        if label.buddy() is not None and label.isVisible() and mnemonic(label.text()):
            assert mnemonic(label.text()) not in shortcuts, label.text()
            shortcuts[mnemonic(label.text())] = label.buddy()
    for button in dialog.findChildren(QAbstractButton):
        if button.isVisible() and mnemonic(button.text()):
            assert mnemonic(button.text()) not in shortcuts, button.text()
            shortcuts[mnemonic(button.text())] = button
    row_widgets = [w for row in dialog.rows.values() for w in (row.slider.slider, row.use_global)]
    without = [w.objectName() or w.accessibleName() for w in dialog.focus_chain()
               if w.isVisible() and w not in shortcuts.values() and w not in row_widgets]
    assert not without, f"no Alt+letter: {without}"
    for which in (QDialogButtonBox.StandardButton.Ok, QDialogButtonBox.StandardButton.Apply,
                  QDialogButtonBox.StandardButton.Cancel):
        assert mnemonic(dialog.buttons.button(which).text()), which

    # Each one moves focus to its field (a model row has none of its own: Alt+M, the
    # "Model" heading, goes to the first row).
    dialog.host_edit.setFocus()
    for letter, widget in ((Qt.Key.Key_G, dialog.global_slider.slider), (Qt.Key.Key_T, dialog.global_edit),
                           (Qt.Key.Key_M, dialog.rows["alpha"].slider.slider), (Qt.Key.Key_H, dialog.host_edit),
                           (Qt.Key.Key_P, dialog.port_spin), (Qt.Key.Key_L, dialog.max_spin),
                           (Qt.Key.Key_B, dialog.budget_edit), (Qt.Key.Key_K, dialog.floor_edit),
                           (Qt.Key.Key_R, dialog.notify_crash_check)):
        assert press(letter, Qt.KeyboardModifier.AltModifier) is widget, letter

    # Alt+letter presses buttons: change the port by keyboard, Alt+A applies, Alt+C closes.
    press(Qt.Key.Key_P, Qt.KeyboardModifier.AltModifier)
    press(Qt.Key.Key_Up)
    assert dialog.buttons.button(QDialogButtonBox.StandardButton.Apply).isEnabled()
    press(Qt.Key.Key_A, Qt.KeyboardModifier.AltModifier)
    loop.run_until_complete(until(lambda: paths.settings_file.exists() and not dialog.saving, 10, "Alt+A to save"))
    assert tomllib.loads(paths.settings_file.read_text())["port"] == 8778
    press(Qt.Key.Key_C, Qt.KeyboardModifier.AltModifier)
    loop.run_until_complete(until(lambda: not shiboken6.isValid(dialog) or not dialog.isVisible(), 5,
                                  "Alt+C to close the dialog"))
