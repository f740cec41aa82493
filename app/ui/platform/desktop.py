"""Hand-offs to the desktop: open a file or folder in the user's program, copy text, and
the file and folder pickers.

Kept apart so that no widget calls QDesktopServices or QFileDialog directly and tests can
replace them. The pickers never block: they are opened with ``open()`` (no nested event
loop inside a coroutine) and call back with the chosen path; nothing when cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QFileDialog, QWidget

log = logging.getLogger(__name__)


def open_folder(path: Path) -> bool:
    """Opens a folder in the file manager, creating it first (the logs folder before any load)."""
    path.mkdir(parents=True, exist_ok=True)
    return _open(path)


def open_file(path: Path) -> bool:
    """Opens a file with the desktop's default program; False when none could."""
    return _open(path)


def _open(path: Path) -> bool:
    ok = QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))
    if not ok:
        log.warning("no program could open %s", path)
    return ok


def copy_text(text: str) -> None:
    QGuiApplication.clipboard().setText(text)


def choose_file(parent: QWidget | None, title: str, start: Path, name_filters: Sequence[str],
                on_chosen: Callable[[Path], None], *, places: Sequence[Path] = ()) -> QFileDialog:
    """A non-blocking "open file" dialog starting at ``start`` (a folder, or a file to
    preselect); ``places`` are added to its sidebar. Calls ``on_chosen(path)`` on Open."""
    dialog = _dialog(parent, title, start, on_chosen)
    dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
    dialog.setNameFilters(list(name_filters))
    if start.is_file():
        dialog.selectFile(str(start))
    if places:
        urls = dialog.sidebarUrls()
        for place in places:
            url = QUrl.fromLocalFile(str(place))
            if url not in urls:
                urls.append(url)
        dialog.setSidebarUrls(urls)
    dialog.open()
    return dialog


def choose_folder(parent: QWidget | None, title: str, start: Path, on_chosen: Callable[[Path], None]) -> QFileDialog:
    """A non-blocking folder picker starting at ``start``; calls ``on_chosen(path)`` on Choose."""
    dialog = _dialog(parent, title, start, on_chosen)
    dialog.setFileMode(QFileDialog.FileMode.Directory)
    dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
    dialog.open()
    return dialog


_open_pickers: set[QFileDialog] = set()  # a picker without a parent lives as long as Python holds it


def _dialog(parent: QWidget | None, title: str, start: Path, on_chosen: Callable[[Path], None]) -> QFileDialog:
    folder = start if start.is_dir() else start.parent
    dialog = QFileDialog(parent, title, str(folder))
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
    dialog.fileSelected.connect(lambda chosen: chosen and on_chosen(Path(chosen)))
    _open_pickers.add(dialog)
    dialog.finished.connect(lambda _result: _open_pickers.discard(dialog))
    dialog.destroyed.connect(lambda _obj=None: _open_pickers.discard(dialog))  # closed with its parent
    return dialog
