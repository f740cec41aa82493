"""The Settings dialog's "Copy diagnostics" button: ``siesta doctor``'s report (what a bug
report needs, secrets never shown) put on the clipboard as plain text, with a line beside the
button that says what happened.

The report is built by the bridge (:meth:`~app.ui.bridge.ManagerBridge.diagnostics`) in a
worker thread: it runs ``llama-server --version`` and asks the port, the tray and the remotes,
which can take seconds, so the button is disabled meanwhile and the line says so. The
outcome is also announced to screen readers. The clipboard is reached through
:func:`app.ui.platform.desktop.copy_text` (or the ``copy`` given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import shiboken6
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from app.ui import a11y, theme
from app.ui.bridge import ManagerBridge
from app.ui.platform import desktop

COLLECTING = "Collecting diagnostics..."
DESCRIPTION = ("Copies what a bug report needs to the clipboard: versions, llama-server, GPUs, tray, folders, "
               "port, remotes and recipes, as `siesta doctor` prints them. Secrets are shown as ***.")


class DiagnosticsRow(QWidget):
    """"Copy diagnostics" and the line that says what it did."""

    def __init__(self, bridge: ManagerBridge, copy: Callable[[str], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self._copy = copy
        self.task: Any = None
        self.failed = False
        self.button = QPushButton("Copy diag&nostics", objectName="copy-diagnostics")
        self.button.setAccessibleName("Copy diagnostics")
        self.button.setAccessibleDescription(DESCRIPTION)
        self.button.setToolTip(DESCRIPTION)
        self.button.clicked.connect(self.copy)
        self.status = QLabel(objectName="diagnostics-status")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.button)
        layout.addWidget(self.status, 1)
        self._apply_theme()

    @property
    def busy(self) -> bool:
        return self.task is not None and not self.task.done()

    def copy(self) -> Any:
        """Builds the report and copies it; returns the task (None while one runs already)."""
        if self.busy:
            return None
        self.button.setEnabled(False)
        self._show(COLLECTING, failed=False)
        self.task = self.bridge.run(self.bridge.diagnostics(), "collect diagnostics", report=False)
        self.task.add_done_callback(self._done)
        return self.task

    def _done(self, task: Any) -> None:
        if not shiboken6.isValid(self):
            return
        self.button.setEnabled(True)
        if task.cancelled():
            self._show("", failed=False)
            return
        exc = task.exception()
        if exc is not None:
            self._show(f"Could not collect diagnostics: {exc}", failed=True)
            return
        report: str = task.result()
        try:
            (self._copy or desktop.copy_text)(report)
        except Exception as error:  # noqa: BLE001 - a clipboard that refuses is said, not raised
            self._show(f"Could not copy to the clipboard: {error}", failed=True)
            return
        lines = report.count("\n")
        self._show(f"Copied {lines} lines to the clipboard: paste them into your bug report.", failed=False)

    def _show(self, message: str, *, failed: bool) -> None:
        self.failed = failed
        self.status.setText(message)
        self._apply_theme()
        if message and message != COLLECTING:
            a11y.announce(self.button, message, assertive=failed)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_theme()

    def _apply_theme(self) -> None:
        self.status.setStyleSheet(theme.text_style("error" if self.failed else "hint", self))

    def detach(self) -> None:
        """The dialog is closing: a report still being built is dropped."""
        if self.busy:
            self.task.cancel()
