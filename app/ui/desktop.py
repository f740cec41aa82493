"""Hand-offs to the desktop: open a file or folder in the user's program, copy text.

Kept apart so that no widget calls QDesktopServices directly and tests can replace them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication

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
