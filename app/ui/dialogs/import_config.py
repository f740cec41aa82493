""""Import configuration...": llama-swap's ``config.yaml`` or Lemonade's ``user_models.json``
become Siesta recipes.

:func:`choose_config` opens a file picker (never blocking) that starts at the first
configuration found in its usual place, with every such place in its sidebar. The chosen
file goes to an :class:`ImportDialog`, which imports it in a worker thread and then shows
what it created, which models it left out and why, and which settings it changed or
dropped on the way (the core's ``ImportResult``). The new recipes are listed in the tray
at once. The outcome is announced to screen readers; Alt+D reaches the details, Alt+C
closes.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from app.ui import a11y, icons, text, theme
from app.ui.bridge import ImportConfigError, ImportResult, ManagerBridge
from app.ui.platform import desktop

log = logging.getLogger(__name__)

NAME_FILTERS = ("llama-swap or Lemonade configuration (*.yaml *.yml *.json)", "All files (*)")


def choose_config(bridge: ManagerBridge, on_chosen: Callable[[Path], None], *, home: Path | None = None,
                  parent: QWidget | None = None) -> None:
    """Opens the file picker, pre-pointed at a configuration found in its usual place."""
    candidates = bridge.import_candidates(home)
    start = candidates[0] if candidates else (home if home is not None else Path.home())
    places = list(dict.fromkeys(c.parent for c in candidates))
    desktop.choose_file(parent, "Import a llama-swap or Lemonade configuration", start, NAME_FILTERS, on_chosen,
                        places=places)


class ImportDialog(QDialog):
    """Imports one configuration as soon as it is built and shows the outcome."""

    def __init__(self, bridge: ManagerBridge, path: Path, *, home: Path | None = None,
                 env: Mapping[str, str] | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.path = path
        self.setWindowTitle("Import configuration — Siesta")
        self.setWindowIcon(icons.app_icon())
        self.setObjectName("import-dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.result: ImportResult | None = None
        self.error: str | None = None

        self.headline = QLabel(f"Importing {html.escape(str(path))}...")
        self.headline.setObjectName("headline")
        self.headline.setWordWrap(True)
        self.headline.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.busy_bar = QProgressBar()
        self.busy_bar.setRange(0, 0)
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setMaximumHeight(12)
        self.busy_bar.setAccessibleName(f"Importing {path.name}")
        self.details = QTextBrowser()
        self.details.setObjectName("details")
        self.details.setOpenLinks(False)
        self.details.setAccessibleName(f"What the import of {path.name} did")
        self.details.hide()
        self.details_label = QLabel("&Details:")
        self.details_label.setBuddy(self.details)
        self.details_label.hide()
        # a button of our own, not QDialogButtonBox's Close: that one has no Alt+letter on every desktop
        self.close_button = QPushButton("&Close")
        self.close_button.setObjectName("close")
        self.close_button.setDefault(True)
        self.close_button.clicked.connect(self.reject)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.headline)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.details_label)
        layout.addWidget(self.details, 1)
        layout.addLayout(buttons)
        a11y.set_tab_order([self.details, self.close_button])
        self.resize(720, 380)

        self.task: asyncio.Task[Any] = bridge.run(bridge.import_config(path, home=home, env=env),
                                                  f"import {path}", report=False)
        self.task.add_done_callback(self._imported)

    @property
    def importing(self) -> bool:
        return not self.task.done()

    def _imported(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if not shiboken6.isValid(self):
            return
        self.busy_bar.hide()
        if exc is not None:
            if not isinstance(exc, (ImportConfigError, OSError)):
                log.error("import of %s failed", self.path, exc_info=exc)
            self.error = str(exc)
            self.headline.setText(f"Could not import {html.escape(str(self.path))}:<br>{html.escape(str(exc))}")
            self.headline.setStyleSheet(theme.text_style("error", self.headline))
            a11y.announce(self.headline, self.headline.text(), assertive=True)
            return
        self.result = result = task.result()
        left_out, changed = text.split_import_notes(result.skipped)
        headline = text.import_headline(result.kind, len(result.created), len(left_out))
        self.headline.setText(f"<b>{html.escape(headline)}</b><br>from {html.escape(str(self.path))}")
        self.details.setHtml(self._details_html(result, left_out, changed))
        self.details_label.show()
        self.details.show()
        a11y.announce(self.headline, headline)

    def _details_html(self, result: ImportResult, left_out: list[str], changed: list[str]) -> str:
        parts = []
        if result.created:
            items = "".join(f"<li><b>{html.escape(p.stem)}</b> — {html.escape(str(p))}</li>" for p in result.created)
            parts.append(f"<p>Created:</p><ul>{items}</ul>")
            parts.append("<p>Load them from the tray menu's \"Load model\", or ask for them by name "
                         "through the API.</p>")
        if left_out:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in left_out)
            parts.append(f"<p>Left out (could not be mapped):</p><ul>{items}</ul>")
        if changed:
            items = "".join(f"<li>{html.escape(line)}</li>" for line in changed)
            parts.append(f"<p>Settings that could not be carried over as they are:</p><ul>{items}</ul>")
        return "".join(parts) or "<p>The configuration has no models.</p>"

    def reject(self) -> None:
        if self.importing:
            return  # a few files are being written; the outcome shows in a moment
        super().reject()
