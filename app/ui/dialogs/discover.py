""""Find models on this computer": GGUF files already on disk become recipes in two clicks.

The dialog scans as soon as it is built, in a worker thread (a big disk can take a
moment) with a busy bar, and lists every model found with a check box: name, size and
where it was found (hover for the file). New models are ticked; a model some recipe
already serves is listed greyed out, "already has recipe NAME". "Add folder..." scans
again with a folder of the user's own added (ticks the user changed are kept). "Create
recipes" writes one recipe per ticked model (never overwriting one) and the new models
are listed in the tray at once; the dialog stays open, showing what it created.

From the keyboard: Alt+M (or Tab) reaches the list, the arrows move, Space ticks or
unticks the model at the cursor; Alt+R creates the recipes.

Nothing here blocks: the scan and the writing run as tasks through the bridge, and the
folder picker is opened with ``open()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import shiboken6
from PySide6.QtCore import Qt
from PySide6.QtGui import QCloseEvent, QKeyEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.ui import a11y, icons, text, theme
from app.ui.bridge import FoundModel, ManagerBridge
from app.ui.platform import desktop

log = logging.getLogger(__name__)

COLUMNS = ("Model", "Size", "Where")
COL_NAME, COL_SIZE, COL_WHERE = range(3)
INTRO = ("Siesta looks for GGUF models in the Hugging Face cache, LM Studio's models folder, llama.cpp's "
         "cache and Ollama's model store. Each model you tick gets a recipe, and clients ask for it by the "
         "name shown.")


class TickList(QTreeWidget):
    """The list of models found: Space (or Select) ticks or unticks the row at the cursor,
    whichever of its columns the cursor is in."""

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        item = self.currentItem()
        if (event.key() in (Qt.Key.Key_Space, Qt.Key.Key_Select) and not event.modifiers()
                and item is not None and item.flags() & Qt.ItemFlag.ItemIsUserCheckable
                and item.flags() & Qt.ItemFlag.ItemIsEnabled):
            ticked = item.checkState(COL_NAME) == Qt.CheckState.Checked
            item.setCheckState(COL_NAME, Qt.CheckState.Unchecked if ticked else Qt.CheckState.Checked)
            event.accept()
            return
        super().keyPressEvent(event)


class DiscoverDialog(QDialog):
    """Lists the GGUF models on this computer and writes recipes for the ticked ones.

    ``home`` and ``env`` are passed to the scan (the user's home and environment when
    None); tests point them at a fake home.
    """

    def __init__(self, bridge: ManagerBridge, *, home: Path | None = None, env: Mapping[str, str] | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.home = home
        self.env = env
        self.setWindowTitle("Find models — Siesta")
        self.setWindowIcon(icons.app_icon())
        self.setObjectName("discover-dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.folders: list[Path] = []
        self.found: list[FoundModel] = []
        self.known: dict[str, str] = {}  # resolved model path -> the recipe that serves it
        self.rows: dict[str, QTreeWidgetItem] = {}  # resolved path -> row
        self._by_path: dict[str, FoundModel] = {}
        self._ticks: dict[str, bool] = {}  # the user's own ticks, kept across scans
        self.scan_task: asyncio.Task[Any] | None = None
        self.create_task: asyncio.Task[Any] | None = None
        self.created: list[Path] = []

        intro = QLabel(INTRO)
        intro.setWordWrap(True)
        self.busy_bar = QProgressBar()
        self.busy_bar.setObjectName("busy")
        self.busy_bar.setRange(0, 0)  # no known end: an animated busy bar
        self.busy_bar.setTextVisible(False)
        self.busy_bar.setMaximumHeight(12)
        self.busy_bar.setAccessibleName("Looking for models")
        self.summary_label = QLabel()
        self.summary_label.setObjectName("summary")
        self.summary_label.setWordWrap(True)

        self.tree = TickList()
        self.tree.setObjectName("models")
        self.tree.setAccessibleName("Models found on this computer")
        self.tree.setAccessibleDescription("Each ticked model gets a recipe. Space ticks or unticks the model at "
                                           "the cursor.")
        self.tree.setColumnCount(len(COLUMNS))
        self.tree.setHeaderLabels(COLUMNS)
        self.tree.setRootIsDecorated(False)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        # the row at the keyboard's cursor shows as selected; ticks, not the selection, say what is created
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.tree.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        header = self.tree.header()
        header.setStretchLastSection(True)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_SIZE, QHeaderView.ResizeMode.ResizeToContents)
        header.setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self.tree.itemChanged.connect(self._on_item_changed)
        self.tree.currentItemChanged.connect(self._on_current_changed)
        list_label = QLabel("&Models:")
        list_label.setBuddy(self.tree)

        self.result_label = QLabel()
        self.result_label.setObjectName("result")
        self.result_label.setWordWrap(True)
        self.result_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.result_label.hide()

        self.add_folder_button = QPushButton("&Add folder...")
        self.add_folder_button.setToolTip("Also look for GGUF files in a folder of your choice (and its subfolders)")
        self.add_folder_button.clicked.connect(self._choose_folder)
        self.create_button = QPushButton("C&reate recipes")
        self.create_button.setObjectName("create")
        self.create_button.setDefault(True)
        self.create_button.clicked.connect(self.create_recipes)
        self.close_button = QPushButton("&Cancel")
        self.close_button.setObjectName("close")
        self.close_button.clicked.connect(self.reject)

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_folder_button)
        buttons.addStretch(1)
        buttons.addWidget(self.create_button)
        buttons.addWidget(self.close_button)
        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addWidget(self.busy_bar)
        layout.addWidget(self.summary_label)
        layout.addWidget(list_label)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.result_label)
        layout.addLayout(buttons)
        a11y.set_tab_order([self.tree, self.add_folder_button, self.create_button, self.close_button])
        self.resize(820, 380)
        self.scan()

    # ---- scanning ------------------------------------------------------------------------------

    @property
    def scanning(self) -> bool:
        return self.scan_task is not None and not self.scan_task.done()

    def scan(self) -> asyncio.Task[Any]:
        """Looks again (in a worker thread), in the usual places and every added folder."""
        if self.scanning:
            assert self.scan_task is not None
            self.scan_task.cancel()  # its thread finishes on its own; its answer is dropped
        places = "the usual places" + (" and " + ", ".join(
            text.home_relative(str(f), self._home_text()) for f in self.folders) if self.folders else "")
        self.summary_label.setText(f"Looking for GGUF models in {places}...")
        self.busy_bar.show()
        task = self.bridge.run(self.bridge.discover_models(home=self.home, extra_dirs=self.folders, env=self.env),
                               "find models", report=False)
        self.scan_task = task
        task.add_done_callback(self._scanned)
        self._update_buttons()
        return task

    def _scanned(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if task is not self.scan_task or not shiboken6.isValid(self):
            return
        self.busy_bar.hide()
        if exc is not None:
            log.warning("finding models failed", exc_info=exc)
            self.summary_label.setText(f"Could not look for models: {exc}")
        else:
            self.found, self.known = task.result()
            self._fill()
        a11y.announce(self.summary_label, self.summary_label.text())
        self._update_buttons()
        if self.create_button.isEnabled():
            self.create_button.setFocus()

    def _home_text(self) -> str:
        return str(self.home if self.home is not None else Path.home())

    def _fill(self) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        self.rows = {}
        self._by_path = {os.path.realpath(m.path): m for m in self.found}
        home = self._home_text()
        new = known = 0
        for model in self.found:
            real = os.path.realpath(model.path)
            recipe = self.known.get(real)
            item = QTreeWidgetItem()
            item.setData(COL_NAME, Qt.ItemDataRole.UserRole, real)
            item.setText(COL_SIZE, text.format_bytes(model.size))
            item.setTextAlignment(COL_SIZE, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setText(COL_WHERE, text.found_where(model.source, model.origin, home))
            tip = str(model.path) + (f"\n(the file is {real})" if real != str(model.path) else "")
            for col in range(len(COLUMNS)):
                item.setToolTip(col, tip)
            item.setData(COL_NAME, Qt.ItemDataRole.AccessibleDescriptionRole,
                         f"{item.text(COL_SIZE)}, {item.text(COL_WHERE)}")
            self._mark(item, model, recipe)
            if recipe is None:
                new += 1
            else:
                known += 1
            self.tree.addTopLevelItem(item)
            self.rows[real] = item
        self.tree.blockSignals(False)
        self.tree.resizeColumnToContents(COL_NAME)
        self.summary_label.setText(text.found_summary(new, known, len(self.folders)))

    def _mark(self, item: QTreeWidgetItem, model: FoundModel, recipe: str | None) -> None:
        """A new model: enabled with a check box (ticked unless the user unticked it);
        one a recipe serves already: greyed out, saying which."""
        real = item.data(COL_NAME, Qt.ItemDataRole.UserRole)
        if recipe is None:
            item.setText(COL_NAME, model.name)
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsUserCheckable
                          | Qt.ItemFlag.ItemNeverHasChildren)
            ticked = self._ticks.get(real, True)
            item.setCheckState(COL_NAME, Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)
        else:
            item.setText(COL_NAME, f"{model.name} — already has recipe {recipe}")
            item.setFlags(Qt.ItemFlag.ItemNeverHasChildren)  # shown, not enabled
            item.setCheckState(COL_NAME, Qt.CheckState.Unchecked)

    def _on_current_changed(self, current: QTreeWidgetItem | None, _previous: QTreeWidgetItem | None) -> None:
        if current is not None:
            current.setSelected(True)  # also when Tab or an arrow made it current

    def _on_item_changed(self, item: QTreeWidgetItem, column: int) -> None:
        if column == COL_NAME and item.flags() & Qt.ItemFlag.ItemIsEnabled:
            real = item.data(COL_NAME, Qt.ItemDataRole.UserRole)
            self._ticks[real] = item.checkState(COL_NAME) == Qt.CheckState.Checked
        self._update_buttons()

    def _choose_folder(self) -> None:
        start = self.folders[-1] if self.folders else Path(self._home_text())
        desktop.choose_folder(self, "Look for GGUF models in", start, self.add_folder)

    def add_folder(self, folder: Path) -> asyncio.Task[Any] | None:
        """Adds a folder to look in and scans again."""
        if not shiboken6.isValid(self):
            return None
        if folder not in self.folders:
            self.folders.append(folder)
        return self.scan()

    # ---- ticks and recipes ------------------------------------------------------------------------

    def model_for(self, real: str) -> FoundModel:
        return self._by_path[real]

    def ticked(self) -> list[FoundModel]:
        out = []
        for real, item in self.rows.items():
            if item.flags() & Qt.ItemFlag.ItemIsEnabled and item.checkState(COL_NAME) == Qt.CheckState.Checked:
                out.append(self.model_for(real))
        return out

    def set_ticked(self, name: str, ticked: bool) -> None:
        """Ticks or unticks the row of the model suggested as ``name`` (as a click would)."""
        item = next(i for real, i in self.rows.items() if self.model_for(real).name == name)
        item.setCheckState(COL_NAME, Qt.CheckState.Checked if ticked else Qt.CheckState.Unchecked)

    @property
    def creating(self) -> bool:
        return self.create_task is not None and not self.create_task.done()

    def create_recipes(self) -> asyncio.Task[Any] | None:
        chosen = self.ticked()
        if not chosen or self.creating or self.scanning:
            return None
        self.result_label.hide()
        task = self.bridge.run(self.bridge.create_recipes(chosen), "create recipes", report=False)
        self.create_task = task
        task.add_done_callback(self._created)
        self._update_buttons()
        return task

    def _created(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if not shiboken6.isValid(self):
            return
        if exc is not None:
            log.warning("creating recipes failed", exc_info=exc)
            self._show_result(f"Could not create the recipes: {exc}", error=True)
        else:
            created, self.known = task.result()
            self.created += created
            self._fill()
            self._show_result(text.recipes_created_text([p.stem for p in created]))
            self.close_button.setText("&Close")
        self._update_buttons()

    def _show_result(self, message: str, *, error: bool = False) -> None:
        self.result_label.setText(message)
        self.result_label.setStyleSheet(theme.text_style("error", self.result_label) if error else "")
        self.result_label.show()
        a11y.announce(self.result_label, message, assertive=error)

    def _update_buttons(self) -> None:
        busy = self.scanning or self.creating
        self.create_button.setEnabled(not busy and bool(self.ticked()))
        self.add_folder_button.setEnabled(not busy)
        self.tree.setEnabled(not busy)

    # ---- closing --------------------------------------------------------------------------------------

    def reject(self) -> None:
        if self.creating:
            return  # let the files be written; the result shows here
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.creating:
            event.ignore()
            return
        super().closeEvent(event)

    def done(self, result: int) -> None:
        if self.scanning:
            assert self.scan_task is not None
            self.scan_task.cancel()
        super().done(result)
