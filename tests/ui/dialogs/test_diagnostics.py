"""Settings' "Copy diagnostics": the button (named for screen readers, Alt+N) builds ``siesta
doctor``'s report through the bridge, off the GUI thread, and puts the plain text on the
clipboard (Qt's own, offscreen), secrets replaced; a failure is said beside it."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible, QKeySequence
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from app.ui.bridge import ManagerBridge
from app.ui.dialogs.diagnostics import COLLECTING
from app.ui.dialogs.settings import SettingsDialog
from tests.ui.helpers import until


def open_dialog(manager, qtbot) -> SettingsDialog:  # noqa: ANN001
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)
    dialog.show()
    return dialog


def test_copy_diagnostics_puts_the_report_on_the_clipboard(loop, start_manager, write_recipe, qtbot) -> None:  # noqa: ANN001
    write_recipe("tiny", 'model = "/models/tiny.gguf"\nargs = ["--ctx-size", "2048", "--api-key", "sekrit-ui"]\n')
    write_recipe("broken", "model = [\n")
    dialog = open_dialog(start_manager(), qtbot)
    row = dialog.diagnostics
    button = row.button
    assert QAccessible.queryAccessibleInterface(button).text(QAccessible.Text.Name) == "Copy diagnostics"
    assert QKeySequence.mnemonic(button.text()).toString() == "Alt+N"
    assert button in dialog.focus_chain()
    QApplication.clipboard().setText("something else")

    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    assert not button.isEnabled() and row.status.text() == COLLECTING
    assert row.copy() is None  # one report at a time
    loop.run_until_complete(until(lambda: row.status.text().startswith("Copied"), 60, "the report to be copied"))
    report = QApplication.clipboard().text()
    assert report.startswith("Siesta diagnostics, ")
    lines = report.count("\n")
    assert row.status.text() == f"Copied {lines} lines to the clipboard: paste them into your bug report."
    assert button.isEnabled() and not row.failed
    assert "--ctx-size 2048 --api-key ***" in report and "sekrit" not in report
    assert "broken.toml" in report and "does not parse" in report
    assert str(dialog.bridge.paths.config_dir) in report

    # Alt+N, from anywhere in the dialog, does it again.
    QApplication.clipboard().setText("")
    dialog.activateWindow()
    dialog.host_edit.setFocus()
    QTest.keyClick(dialog.host_edit, Qt.Key.Key_N, Qt.KeyboardModifier.AltModifier)
    loop.run_until_complete(until(lambda: QApplication.clipboard().text().startswith("Siesta diagnostics"), 60,
                                  "Alt+N to copy the report again"))


def test_a_report_that_cannot_be_built_is_said(loop, start_manager, qtbot) -> None:  # noqa: ANN001
    dialog = open_dialog(start_manager(), qtbot)
    row = dialog.diagnostics

    async def fails() -> str:
        raise ValueError("this is done on the machine that runs Siesta (gpubox)")

    row.bridge.diagnostics = fails  # type: ignore[method-assign]
    QApplication.clipboard().setText("kept")
    task = row.copy()
    loop.run_until_complete(until(task.done, 10, "the attempt to end"))
    assert row.failed and row.button.isEnabled()
    assert row.status.text() == "Could not collect diagnostics: this is done on the machine that runs Siesta (gpubox)"
    assert QApplication.clipboard().text() == "kept"


def test_closing_the_dialog_drops_a_report_being_built(loop, start_manager, qtbot) -> None:  # noqa: ANN001
    dialog = open_dialog(start_manager(), qtbot)
    task = dialog.diagnostics.copy()
    dialog.reject()
    loop.run_until_complete(until(task.done, 60, "the report's task to end"))
    assert task.cancelled()
