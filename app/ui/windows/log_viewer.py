"""A model's server log in a window that follows new lines: :class:`LogViewer`.

The log is the file a model's snapshot names (``log_file``). The first read takes only its
last :data:`TAIL_BYTES`; after that a timer reads from the last offset every
:data:`POLL_MS` while the window is open, at most :data:`READ_BYTES` at a time and
:data:`READS_PER_TICK` reads a tick, so a fast-growing log never blocks the GUI thread.
The backend rotates the log to ``<name>.log.1`` past 2 MB and starts a new file: a new
inode (or a file shorter than what was read) makes the viewer finish the old file and
reopen the new one from its start. The view keeps a bounded number of lines
(:data:`MAX_LINES`) and stays at the bottom unless the user has scrolled up.

From the keyboard: Alt+L the log, Alt+O opens it in an editor, Alt+C or Ctrl+W closes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QCloseEvent, QFontDatabase, QHideEvent, QKeySequence, QShortcut, QShowEvent
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.ui import a11y, icons
from app.ui.bridge import ManagerBridge
from app.ui.platform import desktop

log = logging.getLogger(__name__)

POLL_MS = 500
TAIL_BYTES = 200 * 1024
READ_BYTES = 64 * 1024
READS_PER_TICK = 4
MAX_LINES = 5000


class LogFollower:
    """Reads a growing, rotating log file in bounded pieces; :meth:`read` returns the
    complete new lines since the last call (a line still being written waits for its end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._inode: tuple[int, int] | None = None
        self.offset = 0
        self._partial = b""
        self._opened = False
        self.restarts = 0  # how many times the file was rotated or truncated under us

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _open(self, *, tail: bool) -> bool:
        self.close()
        try:
            fh = self.path.open("rb")
        except OSError:
            return False
        st = os.fstat(fh.fileno())
        self._fh, self._inode = fh, (st.st_dev, st.st_ino)
        self._partial = b""
        self.offset = 0
        if tail and st.st_size > TAIL_BYTES:
            fh.seek(st.st_size - TAIL_BYTES)
            fh.readline()  # start at a whole line
            self.offset = fh.tell()
        return True

    def _read_some(self, limit: int) -> bytes:
        assert self._fh is not None
        self._fh.seek(self.offset)
        data = self._fh.read(limit)
        self.offset += len(data)
        return data

    def read(self) -> list[str]:
        """New complete lines (at most READS_PER_TICK x READ_BYTES of the file)."""
        chunks: list[bytes] = []
        if self._fh is None:
            if not self._open(tail=not self._opened):
                return []
            self._opened = True
        budget = READS_PER_TICK
        while budget > 0:
            try:
                st = self.path.stat()
                current: tuple[int, int] | None = (st.st_dev, st.st_ino)
                size = st.st_size
            except OSError:
                current, size = None, 0
            if current is not None and current == self._inode and size < self.offset:
                # Truncated in place: start again from its beginning.
                chunks.append(self._flush_partial())
                self.restarts += 1
                self.offset = 0
                self._partial = b""
            data = self._read_some(READ_BYTES)
            budget -= 1
            if data:
                chunks.append(data)
                continue
            if current is not None and current != self._inode:
                # Rotated: the old file is read to its end; go on with the new one.
                chunks.append(self._flush_partial())
                self.restarts += 1
                if not self._open(tail=False):
                    break
                continue
            break
        return self._lines(b"".join(chunks))

    def _flush_partial(self) -> bytes:
        rest, self._partial = self._partial, b""
        return rest + b"\n" if rest else b""

    def _lines(self, data: bytes) -> list[str]:
        if not data:
            return []
        data = self._partial + data
        head, sep, self._partial = data.rpartition(b"\n")
        if not sep:
            self._partial = data
            return []
        return head.decode("utf-8", "replace").split("\n")


class LogViewer(QDialog):
    """One model's log, following new lines while the window is open."""

    def __init__(self, bridge: ManagerBridge, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.name = name
        self.setObjectName(f"log-viewer-{name}")
        self.setWindowTitle(f"Siesta — {name} log")
        self.setWindowIcon(icons.app_icon())
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.setModal(False)
        self.path = self._log_path()
        self.follower = LogFollower(self.path)

        self.path_label = QLabel()
        self.path_label.setObjectName("log-path")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.path_label.setWordWrap(True)
        self.view = QPlainTextEdit()
        self.view.setObjectName("log-text")
        self.view.setReadOnly(True)
        self.view.setMaximumBlockCount(MAX_LINES)
        self.view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.view.setAccessibleName(f"Log of {name}")
        self.view.setAccessibleDescription("The model server's output, newest lines at the bottom")
        self.view.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                          | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.path_label.setBuddy(self.view)

        self.open_button = QPushButton("&Open in editor")
        self.open_button.setObjectName("log-open-editor")
        self.open_button.setToolTip("Open the log file in the desktop's text editor")
        self.open_button.setAccessibleName(f"Open the log of {name} in an editor")
        self.open_button.clicked.connect(self.open_in_editor)
        self.close_button = QPushButton("&Close")
        self.close_button.setObjectName("log-close")
        self.close_button.setAccessibleName(f"Close the log of {name}")
        self.close_button.clicked.connect(self.close)
        self.close_button.setDefault(True)
        QShortcut(QKeySequence(QKeySequence.StandardKey.Close), self, self.close)

        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.path_label)
        layout.addWidget(self.view, 1)
        layout.addLayout(buttons)
        a11y.set_tab_order([self.view, self.open_button, self.close_button])
        self.resize(820, 480)

        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self._update_label()
        self.poll()
        self.view.setFocus()

    def _log_path(self) -> Path:
        snapshot = self.bridge.snapshot(self.name) or {}
        if snapshot.get("log_file"):
            return Path(snapshot["log_file"])
        return self.bridge.paths.model_log(self.name)

    def _update_label(self) -> None:
        exists = self.path.exists()
        where = str(self.path).replace("&", "&&")  # a lone & would be taken for the Alt+letter
        self.path_label.setText(f"&Log: {where}" if exists else f"&Log: {where} (nothing written yet)")
        self.open_button.setEnabled(exists)

    def text(self) -> str:
        return self.view.toPlainText()

    def at_bottom(self) -> bool:
        bar = self.view.verticalScrollBar()
        return bar.value() >= bar.maximum()

    def poll(self) -> None:
        """Reads what was written since the last poll (bounded) and shows it."""
        try:
            lines = self.follower.read()
        except OSError as exc:
            log.info("reading %s: %s", self.path, exc)
            lines = []
        if not self.open_button.isEnabled():
            self._update_label()
        if not lines:
            return
        bar = self.view.verticalScrollBar()
        follow = self.at_bottom()
        kept = bar.value()
        self.view.appendPlainText("\n".join(lines[-MAX_LINES:]))
        if follow:
            bar.setValue(bar.maximum())
        else:
            bar.setValue(min(kept, bar.maximum()))  # the user scrolled up: stay where they are

    def open_in_editor(self) -> None:
        desktop.open_file(self.path)

    def bring_up(self) -> None:
        self.show()
        self.raise_()
        self.activateWindow()

    def showEvent(self, event: QShowEvent) -> None:
        self.poll()
        self.timer.start()
        super().showEvent(event)

    def hideEvent(self, event: QHideEvent) -> None:
        self.timer.stop()
        super().hideEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.timer.stop()
        self.follower.close()
        super().closeEvent(event)

    def done(self, result: int) -> None:  # Escape ends here
        self.timer.stop()
        super().done(result)
