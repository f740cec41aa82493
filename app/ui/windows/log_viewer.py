"""A model's server log in a window that follows new lines: :class:`LogViewer`.

The log is the file a model's snapshot names (``log_file``). The first read takes only its
last :data:`TAIL_BYTES`; after that a timer reads from the last offset every
:data:`POLL_MS` while the window is open, at most :data:`READ_BYTES` at a time and
:data:`READS_PER_TICK` reads a tick, so a fast-growing log never blocks the GUI thread.
The file is opened for each read and closed at once, never held between ticks: Windows
refuses to move a file someone holds open, and the backend rotates the log by moving it to
``<name>.log.1`` past 2 MB (where the move is refused anyway, it copies the log there and
empties it). A new file at the path (another file id) makes the viewer finish the old one
where the rotation put it, ``<name>.log.1``, then go on with the new one from its start; a
file shorter than what was read is read again from its start. The view keeps a bounded
number of lines (:data:`MAX_LINES`) and stays at the bottom unless the user has scrolled up.

From the keyboard: Alt+L the log, Alt+O opens it in an editor, Alt+C or Ctrl+W closes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
    complete new lines since the last call (a line still being written waits for its end).
    No file is held open between calls."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rotated = path.with_suffix(path.suffix + ".1")  # where the backend moves a full log
        self._inode: tuple[int, int] | None = None  # the file followed: (device, file id)
        self.offset = 0
        self._partial = b""
        self._opened = False
        self.restarts = 0  # how many times the file was rotated or truncated under us

    def close(self) -> None:
        """Nothing to close: each read opens the file and closes it (kept for the window)."""

    @staticmethod
    def _identity(path: Path) -> tuple[tuple[int, int], int] | None:
        """(file id, size) of ``path``, or None when there is none."""
        try:
            st = path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino), st.st_size

    def _start(self, *, tail: bool) -> bool:
        """Follows the file now at :attr:`path`, from its start, or from its last
        :data:`TAIL_BYTES` (at a whole line) with ``tail``."""
        try:
            with self.path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                offset = 0
                if tail and st.st_size > TAIL_BYTES:
                    fh.seek(st.st_size - TAIL_BYTES)
                    fh.readline()  # start at a whole line
                    offset = fh.tell()
        except OSError:
            return False
        self._inode, self.offset, self._partial = (st.st_dev, st.st_ino), offset, b""
        return True

    def _read_some(self, path: Path, limit: int) -> bytes | None:
        """Up to ``limit`` bytes from :attr:`offset` of ``path`` if it is still the file
        followed (opened and closed here); None if it is not, or cannot be read."""
        try:
            with path.open("rb") as fh:
                st = os.fstat(fh.fileno())
                if (st.st_dev, st.st_ino) != self._inode:
                    return None
                fh.seek(self.offset)
                data = fh.read(limit)
        except OSError:
            return None
        self.offset += len(data)
        return data

    def read(self) -> list[str]:
        """New complete lines (at most READS_PER_TICK x READ_BYTES of the file)."""
        chunks: list[bytes] = []
        if self._inode is None:
            if not self._start(tail=not self._opened):
                return []
            self._opened = True
        budget = READS_PER_TICK
        while budget > 0:
            budget -= 1
            now = self._identity(self.path)
            if now is not None and now[0] == self._inode:
                if now[1] < self.offset:
                    # Truncated in place: start again from its beginning.
                    chunks.append(self._flush_partial())
                    self.restarts += 1
                    self.offset = 0
                data = self._read_some(self.path, READ_BYTES)
                if data is None:  # replaced between the look and the read: look again
                    continue
                if data:
                    chunks.append(data)
                    continue
                break
            # Not the file followed any more: rotated (or removed). Finish the old file
            # where the rotation put it, then go on with the new one from its start.
            old = self._identity(self.rotated)
            if old is not None and old[0] == self._inode and old[1] > self.offset:
                data = self._read_some(self.rotated, READ_BYTES)
                if data:
                    chunks.append(data)
                    continue
            chunks.append(self._flush_partial())
            if now is None:  # nothing at the path now: the next file is read from its start
                self._inode = None
                break
            self.restarts += 1
            if not self._start(tail=False):
                self._inode = None
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
