"""The Settings dialog's "Also answer on Ollama's port 11434": it writes ``ollama_port`` to
settings.toml or removes it (used at the next start), and says when the port was taken."""

from __future__ import annotations

import tomllib

from PySide6.QtWidgets import QDialogButtonBox

from app.ui.bridge import ManagerBridge
from app.ui.dialogs.settings import SettingsDialog
from tests.ui.helpers import until

APPLY = QDialogButtonBox.StandardButton.Apply


def open_dialog(manager, qtbot) -> SettingsDialog:
    dialog = SettingsDialog(ManagerBridge(manager))
    qtbot.dialogs.append(dialog)  # it deletes itself on close
    dialog.show()
    return dialog


def apply(loop, dialog: SettingsDialog) -> None:
    dialog.buttons.button(APPLY).click()
    loop.run_until_complete(until(lambda: not dialog.saving, 10, "the dialog to finish saving"))
    assert dialog.error_label.isHidden(), dialog.error_label.text()


def test_the_checkbox_writes_ollama_port_or_removes_it(loop, start_manager, paths, qtbot) -> None:
    manager = start_manager()
    dialog = open_dialog(manager, qtbot)
    check = dialog.ollama_check
    assert check.text() == "Also ans&wer on Ollama's port 11434" and not check.isChecked()
    assert "next time Siesta starts" in dialog.ollama_note.text()
    assert check in dialog.focus_chain()
    check.setChecked(True)
    apply(loop, dialog)
    assert tomllib.loads(paths.settings_file.read_text())["ollama_port"] == 11434
    assert "ollama_port" in manager.restart_pending  # the listener comes at the next start
    check.setChecked(False)
    apply(loop, dialog)
    assert "ollama_port" not in tomllib.loads(paths.settings_file.read_text())


def test_a_taken_port_is_shown_under_the_checkbox(loop, start_manager, qtbot) -> None:
    manager = start_manager(ollama_port=11434)
    manager.loaded_settings.problems["ollama_port"] = (
        "Ollama's port 11434 on 127.0.0.1 is already in use (is Ollama running?): Siesta answers on port 8777 only")
    dialog = open_dialog(manager, qtbot)
    assert dialog.ollama_check.isChecked() and not dialog.buttons.button(APPLY).isEnabled()
    assert "already in use (is Ollama running?)" in dialog.ollama_note.text()
    assert "restart Siesta" in dialog.ollama_note.text()
    assert not dialog.ollama_check.isEnabled()  # fixed by --ollama-port for this run (a flag here)
