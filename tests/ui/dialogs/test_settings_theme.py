"""The Settings dialog on a dark theme: its error text, a refused field's outline and its
hint lines are drawn in colours picked against the palette (app/ui/theme.py), readable on
the window colour, whether the theme is set before the dialog opens or while it is open."""

from __future__ import annotations

import re

import pytest
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QDialogButtonBox, QLabel

from app.ui import theme
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog

DARK = {QPalette.ColorRole.Window: "#202124", QPalette.ColorRole.WindowText: "#e8eaed",
        QPalette.ColorRole.Base: "#121212", QPalette.ColorRole.Text: "#e8eaed",
        QPalette.ColorRole.Button: "#303134", QPalette.ColorRole.ButtonText: "#e8eaed",
        QPalette.ColorRole.PlaceholderText: "#5f6368", QPalette.ColorRole.Mid: "#3c4043"}


def dark_palette() -> QPalette:
    palette = QPalette()
    for role, colour in DARK.items():
        palette.setColor(role, QColor(colour))
    return palette


def drawn_colour(label: QLabel) -> QColor:
    """The colour a label's text is drawn in (its style sheet's, else its palette's)."""
    label.ensurePolished()
    return label.palette().color(label.foregroundRole())


def border_colour(style_sheet: str) -> QColor:
    found = re.search(r"border: 1px solid (#[0-9a-fA-F]{6})", style_sheet)
    assert found, style_sheet
    return QColor(found.group(1))


@pytest.fixture
def dark_app(qapp):
    before = QApplication.palette()
    QApplication.setPalette(dark_palette())
    yield
    QApplication.setPalette(before)


def check_readable(dialog: SettingsDialog, qtbot) -> None:
    window = QColor(DARK[QPalette.ColorRole.Window])
    assert theme.is_dark(dialog)
    dialog.global_edit.setText("")
    qtbot.keyClicks(dialog.global_edit, "soon")  # not a duration
    assert theme.contrast(border_colour(dialog.global_edit.styleSheet()), window) >= theme.HINT_CONTRAST
    dialog.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert dialog.error_label.isVisible() and dialog.error_label.text().startswith("Global timeout:")
    assert theme.contrast(drawn_colour(dialog.error_label), window) >= theme.TEXT_CONTRAST
    qtbot.keyClicks(dialog.budget_edit, "x")  # "90%x"
    assert theme.contrast(border_colour(dialog.budget_edit.styleSheet()), window) >= theme.HINT_CONTRAST
    for hint in (dialog.restart_note, dialog.memory_box.totals_label, dialog.engine_box.update_reason):
        assert theme.contrast(drawn_colour(hint), window) >= theme.HINT_CONTRAST, hint.text()


def test_a_dark_theme_set_before_the_dialog_opens(loop, start_manager, qtbot, dark_app) -> None:
    dialog = SettingsDialog(ManagerBridge(start_manager()))
    qtbot.dialogs.append(dialog)
    dialog.show()
    check_readable(dialog, qtbot)


def test_a_dark_theme_set_while_the_dialog_is_open(loop, start_manager, qtbot) -> None:
    dialog = SettingsDialog(ManagerBridge(start_manager()))
    qtbot.dialogs.append(dialog)
    dialog.show()
    dialog.setPalette(dark_palette())
    check_readable(dialog, qtbot)
