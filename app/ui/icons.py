"""The tray icons (one per overall state) and where their SVG files are found.

The SVGs live in the repository's top-level ``resources/icons/``. In an installed wheel
they are expected as package data under ``app/resources/icons/``; a source checkout
finds them two folders above this file. Icons are loaded once and cached, so switching
state is a dictionary look-up.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from PySide6.QtGui import QIcon

from app.ui import text

ICON_FILES = {
    text.ICON_EMPTY: "siesta-empty.svg",
    text.ICON_LOADED: "siesta-loaded.svg",
    text.ICON_BUSY: "siesta-busy.svg",
    text.ICON_ERROR: "siesta-error.svg",
}
APP_ICON_FILE = "siesta.svg"


def _candidate_dirs() -> list[Path]:
    dirs: list[Path] = []
    try:
        installed = resources.files("app") / "resources" / "icons"
        dirs.append(Path(str(installed)))
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - app is always importable here
        pass
    dirs.append(Path(__file__).resolve().parents[2] / "resources" / "icons")
    return dirs


@functools.cache
def icons_dir() -> Path:
    """The folder holding the icon SVGs; FileNotFoundError names every place looked in."""
    candidates = _candidate_dirs()
    for folder in candidates:
        if (folder / APP_ICON_FILE).is_file():
            return folder
    raise FileNotFoundError("Siesta's icons are missing; looked in " + ", ".join(str(c) for c in candidates))


def icon_path(state: str) -> Path:
    return icons_dir() / ICON_FILES[state]


@functools.cache
def state_icon(state: str) -> QIcon:
    """The tray icon for an overall state (``text.ICON_*``)."""
    return QIcon(str(icon_path(state)))


@functools.cache
def app_icon() -> QIcon:
    return QIcon(str(icons_dir() / APP_ICON_FILE))
