"""The Settings dialog's "llama-server" group: which llama-server loads use, its version,
and for an engine ``siesta engine install`` put there, its llama.cpp release and backend,
with an Update button.

Everything shown comes from the bridge's :meth:`~app.ui.bridge.ManagerBridge.engine_status`
(the same :func:`app.core.engine.locate.engine_status` ``siesta engine info`` prints). The version
is asked with ``--version`` off the GUI thread (cached). When the llama-server in use is an
installed engine, the box asks the releases API (the ``engine_releases_url`` setting), off
the GUI thread, for llama.cpp's latest release: Update is enabled when it is newer, and
otherwise disabled with the reason beside it (no installed engine, already the newest,
still checking). Update installs that release beside the active engine and switches to it
(``engine_install.update`` in a worker thread, through the bridge) with a progress bar and
a result message; closing the dialog cancels it, leaving the active engine as it was.
Error and hint colours are chosen against the palette (:mod:`app.ui.theme`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QWidget

from app.core.engine.release import tag_number
from app.ui import text, theme
from app.ui.bridge import EngineStatus, ManagerBridge

NOT_INSTALLED = ("Update needs an engine installed with Install llama-server... or `siesta engine install`: "
                 "this llama-server was not installed that way.")
NONE_FOUND = "There is no llama-server to update: install one first."


def engine_text(status: EngineStatus) -> str:
    """``"llama.cpp b6000, backend cuda (installed engine b6000-cuda)"``, or ``""`` for a
    llama-server that is not an installed engine."""
    e = status.engine
    return f"llama.cpp {e.tag}, backend {e.backend} (installed engine {e.name})" if e is not None else ""


class EngineBox(QGroupBox):
    """The llama-server group: path, version, installed engine, Install and Update."""

    def __init__(self, bridge: ManagerBridge, install: Callable[[], None] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("llama-server", parent)
        self.bridge = bridge
        self.can_install = install is not None
        self.status: EngineStatus | None = None
        self.version_task: Any = None
        self.check_task: Any = None
        self.update_task: Any = None
        self.cancel: threading.Event | None = None
        self.latest: str | None = None  # llama.cpp's latest tag, once asked

        self.path_label = self._label("engine-path", wrap=True)
        self.version_label = self._label("engine-version")
        self.engine_label = self._label("engine-installed")
        self.install_button = QPushButton("&Install llama-server...", objectName="install-engine")
        self.install_button.setVisible(False)
        if install is not None:
            self.install_button.clicked.connect(install)
        self.update_button = QPushButton("Up&date", objectName="update-engine")
        self.update_button.setAccessibleName("Update llama-server")
        self.update_button.setToolTip("Install llama.cpp's latest release for the same backend and switch to it "
                                      "(the current engine is kept for `siesta engine rollback`)")
        self.update_button.clicked.connect(self.start_update)
        self.update_reason = self._label("update-reason", wrap=True)
        self.result_error = False
        self.progress_bar = QProgressBar(objectName="update-progress")
        self.progress_bar.setRange(0, 100)
        self.progress_bar.hide()
        self.result_label = self._label("update-result", wrap=True)
        self.result_label.hide()

        form = self.form = QFormLayout(self)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_label, 1)
        path_row.addWidget(self.install_button)
        form.addRow("Path:", path_row)
        form.addRow("Version:", self.version_label)
        form.addRow("Engine:", self.engine_label)
        update_row = QHBoxLayout()
        update_row.addWidget(self.update_button)
        update_row.addWidget(self.update_reason, 1)
        form.addRow("", update_row)
        form.addRow("", self.progress_bar)
        form.addRow("", self.result_label)
        bridge.engineChanged.connect(self.refresh)
        self.refresh()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_theme()

    def _apply_theme(self) -> None:
        """Error and hint colours chosen against the palette (again when it changes)."""
        usable = self.status is not None and self.status.usable
        self.path_label.setStyleSheet("" if usable else theme.text_style("error", self))
        self.update_reason.setStyleSheet(theme.text_style("hint", self))
        self.result_label.setStyleSheet(theme.text_style("error", self) if self.result_error else "")

    def _label(self, name: str, *, wrap: bool = False) -> QLabel:
        label = QLabel(objectName=name)
        label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        label.setWordWrap(wrap)
        return label

    @property
    def updating(self) -> bool:
        return self.update_task is not None and not self.update_task.done()

    # ---- what is shown ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Shows the llama-server loads use now, asks its version, and whether a newer release exists."""
        if not shiboken6.isValid(self):
            return
        status = self.status = self.bridge.engine_status()
        where = f" (set by {status.configured_by})" if status.configured_by else ""
        if status.usable:
            assert status.path is not None
            self.path_label.setText(text.home_relative(str(status.path), str(Path.home())) + where)
            self.path_label.setToolTip(str(status.path))
            self.version_label.setText("checking...")
            if self.version_task is not None:
                self.version_task.cancel()
            self.version_task = self.bridge.run(self.bridge.engine_version(status.path),
                                                "check the llama-server version", report=False)
            self.version_task.add_done_callback(self._got_version)
        else:
            self.path_label.setText(f"{status.path}{where}: not found" if status.path else "none found")
            self.path_label.setToolTip(status.problem or "")
            self.version_label.setText("")
        self._apply_theme()
        self.install_button.setVisible(not status.usable and self.can_install)
        self.form.setRowVisible(self.version_label, status.usable)
        self.engine_label.setText(engine_text(status))
        self.form.setRowVisible(self.engine_label, status.engine is not None)
        self._check_latest()

    def _got_version(self, task: Any) -> None:
        if task.cancelled() or task is not self.version_task or not shiboken6.isValid(self):
            return
        exc = task.exception()
        self.version_label.setText(f"unknown ({exc})" if exc is not None else task.result())

    def _set_update(self, enabled: bool, reason: str) -> None:
        self.update_button.setEnabled(enabled and not self.updating)
        self.update_reason.setText(reason)
        self.update_button.setAccessibleDescription(reason)

    def _check_latest(self) -> None:
        """Asks llama.cpp's releases for the latest tag (once per box) and enables Update when
        it is newer than the installed engine."""
        status = self.status
        if self.updating:
            return
        if status is None or status.engine is None:
            self.update_button.setToolTip(NONE_FOUND if status is None or not status.usable else NOT_INSTALLED)
            self._set_update(False, NONE_FOUND if status is None or not status.usable else NOT_INSTALLED)
            return
        if self.latest is not None:
            self._show_latest()
            return
        if self.check_task is not None and not self.check_task.done():
            return
        self._set_update(False, "Checking for a newer llama.cpp release...")
        self.check_task = self.bridge.run(self.bridge.engine_latest_tag(), "check for a newer llama-server",
                                          report=False)
        self.check_task.add_done_callback(self._got_latest)

    def _got_latest(self, task: Any) -> None:
        if task.cancelled() or task is not self.check_task or not shiboken6.isValid(self):
            return
        exc = task.exception()
        if exc is not None:  # offline: Update may still be tried (it asks again)
            self._set_update(True, f"Could not check for a newer release: {exc}")
            return
        self.latest = task.result()
        self._show_latest()

    def _show_latest(self) -> None:
        status = self.status
        assert status is not None and status.engine is not None and self.latest is not None
        if tag_number(self.latest) <= tag_number(status.engine.tag):
            self._set_update(False, f"llama.cpp {status.engine.tag} is the newest release.")
        else:
            self._set_update(True, f"llama.cpp {self.latest} is available (installed: {status.engine.tag}).")

    # ---- updating -----------------------------------------------------------------------------

    def start_update(self) -> asyncio.Task[Any] | None:
        """Installs the latest release beside the active engine and switches to it."""
        if self.updating:
            return None
        self.cancel = threading.Event()
        self.update_button.setEnabled(False)
        self.progress_bar.setValue(0)
        self.progress_bar.show()
        self.result_error = False
        self._apply_theme()
        self.result_label.setText("Asking llama.cpp's releases for the latest build...")
        self.result_label.show()
        self.update_task = self.bridge.run(self.bridge.update_engine(cancel=self.cancel, progress=self._progress),
                                           "update llama-server", report=False)
        self.update_task.add_done_callback(self._updated)
        return self.update_task

    def _progress(self, done: int, total: int, what: str) -> None:
        if shiboken6.isValid(self):
            self.progress_bar.setValue(done * 100 // max(total, 1))
            self.result_label.setText(f"Downloading {what}")

    def _updated(self, task: Any) -> None:
        if not shiboken6.isValid(self):
            return
        self.progress_bar.hide()
        exc = None if task.cancelled() else task.exception()
        if task.cancelled() or (self.cancel is not None and self.cancel.is_set()):
            self.result_label.setText("The update was stopped; the active engine is unchanged.")
        elif exc is not None:
            self.result_error = True
            self._apply_theme()
            self.result_label.setText(f"The update failed: {exc}<br>The active engine is unchanged.")
        elif task.result() is None:
            self.result_label.setText("The active engine is already llama.cpp's latest release.")
        else:
            e = task.result().engine
            self.latest = e.tag
            self.result_label.setText(f"Updated to llama.cpp {e.tag}, backend {e.backend}, version {e.version}."
                                      "<br>Models load with it from their next start.")
        self.refresh()

    def detach(self) -> None:
        """The dialog is closing: stop listening, and stop an update still running (the
        active engine stays as it was)."""
        try:
            self.bridge.engineChanged.disconnect(self.refresh)
        except (RuntimeError, TypeError):
            pass
        if self.cancel is not None and self.updating:
            self.cancel.set()
