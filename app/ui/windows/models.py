"""The "Models" window: every recipe in a table with live state, countdown and controls.

It is what Siesta shows where there is no system tray (GNOME without an extension, or
``QT_QPA_PLATFORM=offscreen``), and what a second ``siesta`` launch brings up. Closing it
keeps Siesta running only when a tray icon is there to bring it back; otherwise closing
the window quits, which unloads every model.

Its countdowns tick once a second while it is visible and not at all while it is hidden.

With no recipe yet, a first-run panel takes the table's place: what Siesta does, and
buttons to find models on this computer, download one from the Hugging Face Hub, or import
another manager's configuration. A banner at the top says when no llama-server can run (and
some model needs it), with a button to install one.

With remotes (models of other machines and engines), the table has a heading row per
machine or engine: "This computer" first, then each remote in name order, with the memory
its models hold together, or with why it cannot be reached. A remote model's row has no
Log or Settings... button (its recipe, if any, is not here); its timeout is written where
that remote keeps it. A model Siesta only routes to (an OpenAI server's) has no controls.

Connected to a Siesta elsewhere (``siesta --connect URL``), the title names it, and what
acts on this machine only is hidden: Find models, Download, Import, Open logs folder, and
each row's Log and Settings... buttons.

Above the table, what idle and memory-pressure unloads gave back ("Gave back 41.0 GB·h today,
310.0 GB·h since Tuesday", the words of ``siesta ps``). The table's Today column says how each
model's day went so far ("3×, 42% in memory", with a bar of its busy and idle shares; the
tooltip has the idle share and the memory it gave back today), read from the history (the
core's ``metrics.day()``, or ``GET /api/v1/history`` for a Siesta elsewhere, or why it cannot
be read) when the window shows, after loads and unloads, and every ten seconds. A loading
model's state is its share of its last load time ("loading... ~40%"), or its seconds on a
first load. The table and Try it share a splitter: the table gets up to eight rows at the
window's default size (and keeps at least three), Try it the rest.

Tab goes as the window is seen: the banner's button, each model's row left to right (headings
are not stops), the Try it panel, then the buttons at the bottom; each of those buttons has its
own Alt+letter (Try it keeps M, P, S, T and A). A row's controls say which model they act on
("Unload qwen when idle for", "Unload qwen", "Log of qwen"), and its button and combo box
carry the model's state, countdown included, as their accessible description. Hint, error
and banner colours come from :mod:`.theme`, so they read on a dark theme too.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, Qt
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.core.config.durations import USE_GLOBAL
from app.ui import a11y, history_text, icons, text, theme
from app.ui.bridge import ManagerBridge
from app.ui.platform import desktop
from app.ui.platform.shell import Shell
from app.ui.text import NEVER, timeout_key
from app.ui.ticker import SecondTicker
from app.ui.timeout_scale import MENU_PRESETS, short_label
from app.ui.windows.day_bar import SHARES_ROLE, DayBarDelegate
from app.ui.windows.try_it import TryItPanel

COLUMNS = ("Model", "State", "Memory", "Today", "Idle timeout", "")
COL_NAME, COL_STATE, COL_MEMORY, COL_TODAY, COL_TIMEOUT, COL_ACTIONS = range(6)
MEMORY_EVERY = 10  # ticks between readings of the memory figures (they change without events)
ROWS_SHOWN = 8  # table rows (models and headings) in view without scrolling at the window's default size
ROWS_KEPT = 3  # rows the table keeps however small the window or far the splitter is dragged
DEFAULT_SIZE = (900, 660)
TODAY_TIP = "Today so far: how often each model was loaded, and the share of the day it was in memory"
HISTORY_EVENTS = ("loaded", "load_failed", "load_cancelled", "idle", "manual", "evicted", "group", "crashed",
                  "memory_pressure", "removed", "added")
"""Events after which the Today column is read again (else every :data:`MEMORY_EVERY` ticks)."""
ACTION_NAMES = {"Load": "Load {}", "Cancel": "Cancel loading {}", "Unload": "Unload {}",
                "Unloading": "Unloading {}", "Dismiss": "Dismiss the failure of {}"}
"""The accessible name of a row's action button, by its text: which model it acts on."""
_FIGURES = re.compile(r"\d+")


class ModelTableRow:
    """The widgets of one model's row in the Models window's table."""

    def __init__(self, window: ModelsWindow, name: str, snapshot: text.Snapshot | None = None) -> None:
        self.name = name
        self.window = window
        first = snapshot or {}
        self.remote = bool(first.get("remote"))  # another machine's or engine's: no log or recipe here
        self.routed_only = text.is_routed_only(first)
        self.name_item = QTableWidgetItem(name)
        self.state_item = QTableWidgetItem("")
        self.memory_item = QTableWidgetItem("")
        self.memory_item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.today_item = QTableWidgetItem("")
        for item in (self.name_item, self.state_item, self.memory_item, self.today_item):
            item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
        self.timeout_combo = QComboBox()
        self.timeout_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.timeout_combo.setObjectName(f"timeout-{name}")
        self.timeout_combo.setToolTip(text.timeout_tip(first))
        self.timeout_combo.activated.connect(self._on_timeout_chosen)
        self.timeout_combo.setAccessibleName(f"Unload {name} when idle for")
        self.timeout_cell = QWidget()
        cell_layout = QHBoxLayout(self.timeout_cell)
        cell_layout.setContentsMargins(0, 0, 0, 0)
        cell_layout.addWidget(self.timeout_combo)
        # On Linux a combo box's accessible name is its value; screen readers name it by the
        # label it is the buddy of. Its row shows the model's name instead of a label.
        label = QLabel(self.timeout_combo.accessibleName(), self.timeout_cell)
        label.setBuddy(self.timeout_combo)
        label.hide()
        self.action_button = QPushButton("Load")
        self.action_button.setObjectName(f"action-{name}")
        self.action_button.clicked.connect(self._on_action)
        self.log_button = QPushButton("Log")
        self.log_button.setToolTip("Show this model's server log, following new lines")
        self.log_button.setAccessibleName(f"Log of {name}")
        self.log_button.clicked.connect(self._open_log)
        self.settings_button = QPushButton("Settings...")
        self.settings_button.setObjectName(f"model-settings-{name}")
        self.settings_button.setToolTip("Model settings: context size, GPU layers, threads, the model file...")
        self.settings_button.setAccessibleName(f"Model settings of {name}")
        self.settings_button.clicked.connect(lambda: self.window.shell.show_model_settings(self.name))
        self.buttons = QWidget()
        layout = QHBoxLayout(self.buttons)
        layout.setContentsMargins(2, 0, 2, 0)
        layout.addWidget(self.action_button)
        layout.addWidget(self.log_button)
        layout.addWidget(self.settings_button)
        layout.addStretch(1)  # a remote model's lone button keeps its size
        local = window.bridge.is_local and not self.remote  # else its log and recipe are on that machine
        self.log_button.setVisible(local)
        self.settings_button.setVisible(local)
        if self.remote:
            self.name_item.setToolTip(f"{first.get('remote_model') or name} on {first['remote']}")
        if self.routed_only:  # nothing to load, unload or time out
            self.action_button.setVisible(False)
            self.timeout_combo.setVisible(False)
            self.buttons.setToolTip(text.ROUTED_ONLY_NOTE)
        self.snapshot: text.Snapshot = {}
        self._combo_state: tuple[Any, ...] = ()

    def place(self, table: QTableWidget, row: int) -> None:
        table.setItem(row, COL_NAME, self.name_item)
        table.setItem(row, COL_STATE, self.state_item)
        table.setItem(row, COL_MEMORY, self.memory_item)
        table.setItem(row, COL_TODAY, self.today_item)
        if self.routed_only:  # no timeout to choose: the combo is left out of the table
            note = QTableWidgetItem("")
            note.setFlags(Qt.ItemFlag.ItemIsEnabled)
            note.setToolTip(text.ROUTED_ONLY_NOTE)
            table.setItem(row, COL_TIMEOUT, note)
        else:
            table.setCellWidget(row, COL_TIMEOUT, self.timeout_cell)
        table.setCellWidget(row, COL_ACTIONS, self.buttons)

    def update(self, snapshot: text.Snapshot, now: float, global_timeout: Any) -> None:
        self.snapshot = snapshot
        state = snapshot["state"]
        status = text.status_text(snapshot, now)
        if snapshot.get("stale"):
            status += " (recipe changed: unload to apply)"
        if self.state_item.text() != status:
            self.state_item.setText(status)
        self.state_item.setToolTip(snapshot.get("error") or "")
        memory = text.memory_text(snapshot) or text.estimate_text(snapshot)
        if self.memory_item.text() != memory:
            self.memory_item.setText(memory)
        label, enabled = {
            "unloaded": ("Load", True),
            "loading": ("Cancel", True),
            "ready": ("Unload", True),
            "unloading": ("Unloading", False),
            "failed": ("Dismiss", True),
        }[state]
        if not text.has_usable_recipe(snapshot):
            label, enabled = "Load", False
        self.action_button.setText(label)
        self.action_button.setEnabled(enabled)
        name = ACTION_NAMES[label].format(self.name)
        if self.action_button.accessibleName() != name:
            self.action_button.setAccessibleName(name)
        self._describe(status)
        log_file = snapshot.get("log_file")
        self.log_button.setEnabled(bool(log_file) and Path(log_file).exists())
        self._update_combo(snapshot, global_timeout)

    def update_day(self, day: dict[str, Any] | None, problem: str | None = None) -> None:
        """Today's loads and shares (``day()``'s entry for this model; None: not known), the
        memory it gave back today in the tooltip; ``problem``: why the history is unavailable."""
        if self.remote:  # another machine's or engine's model: not in this history
            day, problem = None, None
        words = history_text.day_cell(day)
        tip = problem or history_text.day_tooltip(day, self.snapshot)
        shares = history_text.day_shares(day) if day else None
        if shares is not None and not any(shares):  # not in memory today: no bar, only the words
            shares = None
        if self.today_item.text() != words:
            self.today_item.setText(words)
        if self.today_item.toolTip() != tip:
            self.today_item.setToolTip(tip)
        if self.today_item.data(SHARES_ROLE) != shares:
            self.today_item.setData(SHARES_ROLE, shares)

    def tick(self, now: float) -> None:
        """The once-a-second update: only the countdown in the state text (the rest changes
        with the model's events, which call :meth:`update`)."""
        if not self.snapshot:
            return
        status = text.status_text(self.snapshot, now)
        if self.snapshot.get("stale"):
            status += " (recipe changed: unload to apply)"
        if self.state_item.text() != status:
            self.state_item.setText(status)
            self._describe(status)

    @property
    def controls(self) -> list[QWidget]:
        """The row's controls, left to right (the order Tab goes through them)."""
        return [self.timeout_combo, self.action_button, self.log_button, self.settings_button]

    def _describe(self, status: str) -> None:
        """The model's state, countdown included, as the accessible description of the
        row's action button and timeout combo box, so a screen reader says it with them."""
        for widget in (self.action_button, self.timeout_combo):
            # Screen readers read a focused control's new description aloud: while one has
            # the focus, its countdown is not rewritten every second, only a change of state.
            if widget.hasFocus() and _FIGURES.sub("", widget.accessibleDescription()) == _FIGURES.sub("", status):
                continue
            a11y.describe(widget, status)

    def _update_combo(self, snapshot: text.Snapshot, global_timeout: Any) -> None:
        key = timeout_key(snapshot)
        choices: list[tuple[str, Any]] = [(text.use_global_label(snapshot, global_timeout), USE_GLOBAL),
                                          ("Keep loaded", NEVER)]
        choices += [(short_label(s), s) for s in MENU_PRESETS]
        if key not in [c[1] for c in choices]:
            choices.append((f"Custom ({short_label(key)})", key))
        state = (tuple(choices), key, text.has_usable_recipe(snapshot))
        if state == self._combo_state:
            return
        self._combo_state = state
        combo = self.timeout_combo
        combo.blockSignals(True)
        combo.clear()
        for label, value in choices:
            combo.addItem(label, value)
        combo.setCurrentIndex([c[1] for c in choices].index(key))
        combo.setEnabled(text.has_usable_recipe(snapshot))
        combo.blockSignals(False)

    def _on_timeout_chosen(self, index: int) -> None:
        value = self.timeout_combo.itemData(index)
        if value == timeout_key(self.snapshot):
            return
        self.window.bridge.set_model_timeout(self.name, None if value == NEVER else value)

    def _on_action(self) -> None:
        bridge = self.window.bridge
        state = self.snapshot.get("state")
        if state == "unloaded":
            bridge.load(self.name)
        elif state in ("loading", "ready", "failed"):
            bridge.unload(self.name)

    def _open_log(self) -> None:
        self.window.shell.show_log(self.name)


class ModelsWindow(QWidget):
    """A small window listing every model, for desktops without a tray."""

    def __init__(self, bridge: ManagerBridge, shell: Shell) -> None:
        super().__init__()
        self.bridge = bridge
        self.shell = shell
        target = bridge.target
        self.setWindowTitle(f"Siesta — Models on {target.label}" if target is not None else "Siesta — Models")
        self.setWindowIcon(icons.app_icon())
        self.setObjectName("models-window")
        self.rows: dict[str, ModelTableRow] = {}
        # With remotes: a heading row per machine or engine (None: this computer), spanning the table.
        self.group_items: dict[str | None, QTableWidgetItem] = {}
        self._layout: list[tuple[Any, ...]] = []

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.table.setTabKeyNavigation(False)  # else Tab in a row's control moves the table's current cell
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        # Rows tall enough for the combo box and buttons they hold.
        self.table.verticalHeader().setDefaultSectionSize(max(QComboBox().sizeHint().height(),
                                                              QPushButton("Unload").sizeHint().height()) + 6)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_STATE, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(COL_MEMORY, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_TODAY, QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeaderItem(COL_TODAY).setToolTip(TODAY_TIP)
        self.day_delegate = DayBarDelegate(self.table)
        self.table.setItemDelegateForColumn(COL_TODAY, self.day_delegate)
        # Sized from their widgets in refresh(): ResizeToContents ignores cell widgets.
        header.setSectionResizeMode(COL_TIMEOUT, QHeaderView.ResizeMode.Fixed)
        header.setSectionResizeMode(COL_ACTIONS, QHeaderView.ResizeMode.Fixed)

        # ---- first run: no recipes yet ----
        self.empty_label = QLabel(
            "<b>No models yet.</b> Siesta serves GGUF models through one OpenAI-compatible address, "
            "loading each one when a request asks for it and unloading it when idle. "
            "Start with the models already on this computer, download one from the Hugging Face Hub, "
            "or import another model manager's configuration.")
        self.empty_label.setObjectName("first-run-text")
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        find = QPushButton("&Find models on this computer...")
        find.setObjectName("first-run-find")
        find.setToolTip("Looks in the Hugging Face cache, LM Studio, llama.cpp's cache, Ollama and folders you pick")
        find.clicked.connect(shell.show_discover)
        download = QPushButton("&Download a model...")
        download.setObjectName("first-run-download")
        download.setToolTip("Search the Hugging Face Hub for a GGUF model and download it")
        download.clicked.connect(shell.show_download)
        imp = QPushButton("&Import configuration...")
        imp.setObjectName("first-run-import")
        imp.setToolTip("Adds the models of a llama-swap config.yaml or a Lemonade user_models.json")
        imp.clicked.connect(shell.show_import)
        where = f"<code>{bridge.paths.recipes_dir}</code>" if bridge.paths is not None else "its recipes folder"
        self.hint_label = hint = QLabel(
            f"Or write a recipe into {where}, or run <code>siesta demo</code> for a tiny test model.")
        hint.setWordWrap(True)
        hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        first_buttons = QHBoxLayout()
        first_buttons.addWidget(find)
        first_buttons.addWidget(download)
        first_buttons.addWidget(imp)
        first_buttons.addStretch(1)
        self.first_run_buttons = [find, download, imp]
        self.first_run = QFrame()
        self.first_run.setObjectName("first-run")
        first_layout = QVBoxLayout(self.first_run)
        first_layout.setContentsMargins(12, 12, 12, 12)
        first_layout.addWidget(self.empty_label)
        first_layout.addLayout(first_buttons)
        first_layout.addWidget(hint)
        first_layout.addStretch(1)

        # ---- llama-server missing ----
        self.engine_label = QLabel()
        self.engine_label.setObjectName("engine-problem")
        self.engine_label.setWordWrap(True)
        self.engine_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.install_button = QPushButton("I&nstall llama-server...")
        self.install_button.setObjectName("install-engine")
        self.install_button.clicked.connect(shell.show_install_engine)
        self.engine_banner = QFrame()
        self.engine_banner.setObjectName("engine-banner")
        banner_layout = QHBoxLayout(self.engine_banner)
        banner_layout.addWidget(self.engine_label, 1)
        banner_layout.addWidget(self.install_button)
        self.engine_banner.hide()
        self.url_label = QLabel()
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.copy_button = copy = QPushButton("&Copy API URL")
        copy.clicked.connect(self._copy_url)
        # What idle and memory-pressure unloads gave back: the words of `siesta ps`.
        self.given_back_label = QLabel()
        self.given_back_label.setObjectName("given-back")
        self.given_back_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.given_back_label.setToolTip("Memory that idle and memory-pressure unloads freed for other programs, "
                                         "times how long it stayed free")
        self.given_back_label.hide()
        self.message_label = QLabel()
        self.message_label.setObjectName("message")
        self.message_label.setWordWrap(True)
        self.message_label.hide()

        # Alt+letters: none of Try it's M, P, S, T and A
        self.unload_all_button = QPushButton("&Unload all")
        self.unload_all_button.clicked.connect(bridge.unload_all)
        self.find_button = QPushButton("&Find models...")
        self.find_button.setToolTip("Find GGUF models on this computer and add them")
        self.find_button.clicked.connect(shell.show_discover)
        self.download_button = QPushButton("&Download model...")
        self.download_button.setToolTip("Search the Hugging Face Hub for a GGUF model and download it")
        self.download_button.clicked.connect(shell.show_download)
        self.import_button = QPushButton("&Import...")
        self.import_button.setToolTip("Add the models of a llama-swap or Lemonade configuration")
        self.import_button.clicked.connect(shell.show_import)
        self.settings_button = settings = QPushButton("S&ettings...")
        settings.clicked.connect(shell.show_settings)
        self.logs_button = logs = QPushButton("&Open logs folder")
        logs.clicked.connect(lambda: bridge.paths and desktop.open_folder(bridge.paths.log_dir))
        self.quit_button = QPushButton("&Quit")
        self.quit_button.setToolTip("Unload every model and stop Siesta")
        self.quit_button.clicked.connect(shell.request_quit)
        if target is not None:  # these act on this machine, not on the Siesta the window shows
            for button in (find, download, imp, logs):
                button.hide()
            hint.setText(f"Models are added on {target.machine}: <code>siesta discover</code>, "
                         "<code>siesta pull</code> or a recipe in its recipes folder.")
            self.empty_label.setText(f"<b>No models yet</b> on {target.label}.")
            self.quit_button.setToolTip("Quit this client; the other Siesta and its models keep running")

        url_row = QHBoxLayout()
        url_row.addWidget(self.url_label, 1)
        url_row.addWidget(copy)
        buttons = QHBoxLayout()
        buttons.addWidget(self.unload_all_button)
        buttons.addWidget(self.find_button)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.import_button)
        buttons.addStretch(1)
        buttons.addWidget(settings)
        buttons.addWidget(logs)
        buttons.addWidget(self.quit_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.engine_banner)
        layout.addWidget(self.given_back_label)
        self.try_it = TryItPanel(bridge, self)  # a prompt box that chats through the front door
        # The table above Try it, the line between them draggable; the table gets the room
        # (up to ROWS_SHOWN rows at the default size), Try it what is left.
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.setObjectName("models-splitter")
        self.splitter.setChildrenCollapsible(False)
        self.splitter.addWidget(self.table)
        self.splitter.addWidget(self.try_it)
        self.splitter.setStretchFactor(0, 1)
        self.splitter.setStretchFactor(1, 0)
        layout.addWidget(self.splitter, 1)
        layout.addWidget(self.first_run, 1)
        layout.addWidget(self.message_label)
        layout.addLayout(url_row)
        layout.addLayout(buttons)
        self.resize(*DEFAULT_SIZE)
        self._table_rows_given = -1  # rows the splitter last made room for
        self._shown_once = False
        self.bottom_buttons = [self.unload_all_button, self.find_button, self.download_button, self.import_button,
                               settings, logs, self.quit_button]
        self._set_tab_order()
        self._apply_colours()

        self.ticker = SecondTicker(self._tick, bridge.countdown_deadlines, bridge.now, self)
        self._ticks = 0
        bridge.modelEvent.connect(self._on_event)
        bridge.actionFailed.connect(self._on_action_failed)
        bridge.engineChanged.connect(self.refresh)
        bridge.connectionChanged.connect(self.refresh)
        bridge.historyChanged.connect(self._update_days)
        self.refresh()

    # ---- contents ----------------------------------------------------------------------------

    def refresh(self, *, fresh: bool = False) -> None:
        snapshots = self.bridge.snapshots(fresh=fresh)
        remotes = self.bridge.remote_statuses()
        groups = text.model_groups(snapshots, remotes)
        grouped = len(groups) > 1
        layout: list[tuple[Any, ...]] = []
        for remote, models in groups:
            if grouped:
                layout.append(("group", remote["name"] if remote is not None else None))
            layout += [("model", m["name"], text.is_routed_only(m)) for m in models]
        if layout != self._layout:
            self._rebuild(layout, {s["name"]: s for s in snapshots})
        now = self.bridge.now()
        global_timeout = self.bridge.settings.global_unload_timeout
        for snapshot in snapshots:
            self.rows[snapshot["name"]].update(snapshot, now, global_timeout)
        if grouped:
            target = self.bridge.target
            here = text.HERE if target is None else target.machine
            for remote, models in groups:
                item = self.group_items[remote["name"] if remote is not None else None]
                title = text.group_title(remote, models, here=here)
                if item.text() != title:
                    item.setText(title)
                item.setToolTip((text.remote_problem(remote) if remote is not None else None) or "")
        self._update_days()
        self._fit_widget_columns()
        first_run = not snapshots and not remotes
        self.first_run.setVisible(first_run)
        self.splitter.setVisible(not first_run)
        self.unload_all_button.setVisible(not first_run)
        for button in (self.find_button, self.download_button, self.import_button):
            button.setVisible(not first_run and self.bridge.is_local)
        needed = self.bridge.is_local and text.engine_needed(snapshots)
        problem = self.bridge.engine_status().problem if needed else None
        self.engine_label.setText(problem or "")
        self.engine_banner.setVisible(problem is not None)
        self.unload_all_button.setEnabled(any(s["state"] in ("loading", "ready", "failed") for s in snapshots))
        url = f"{self.bridge.api_url}/v1" if self.bridge.api_url else ""
        self.url_label.setText(f"OpenAI-compatible API: <b>{url}</b>" if url else "API not running")
        connection = self.bridge.connection_problem
        if connection:
            self.url_label.setText(f"<b>{html.escape(connection)}</b>")
        gave_back = history_text.given_back_line(self.bridge.given_back_summary(), now)
        if self.given_back_label.text() != gave_back:
            self.given_back_label.setText(gave_back)
        self.given_back_label.setVisible(bool(gave_back) and not first_run)

    def _update_days(self) -> None:
        """The Today column from the bridge's last reading of today's history."""
        days = history_text.days_by_model(self.bridge.history)
        problem = None
        if self.bridge.history_problem is not None:
            problem = f"{history_text.HISTORY_UNAVAILABLE}: {self.bridge.history_problem}"
        for name, row in self.rows.items():
            row.update_day(days.get(name), problem)

    def _rebuild(self, layout: list[tuple[Any, ...]], snapshots: dict[str, text.Snapshot]) -> None:
        # Clearing the table deletes its items and cell widgets, so every row is built anew.
        self._layout = layout
        self.rows = {}
        self.group_items = {}
        self.table.clearSpans()
        self.table.setRowCount(0)
        self.table.setRowCount(len(layout))
        for i, line in enumerate(layout):
            if line[0] == "group":
                self.group_items[line[1]] = self._group_item(i)
                continue
            row = ModelTableRow(self, line[1], snapshots.get(line[1]))
            row.place(self.table, i)
            self.rows[line[1]] = row
        self.table.resizeColumnsToContents()
        self._give_table_room(len(layout))
        self._set_tab_order()

    def table_height(self, rows: int) -> int:
        """The table's height with ``rows`` rows in view, header and frame included."""
        frame = self.table.horizontalHeader().sizeHint().height() + 2 * self.table.frameWidth()
        return frame + rows * self.table.verticalHeader().defaultSectionSize()

    def _give_table_room(self, rows: int) -> None:
        """The table keeps at least :data:`ROWS_KEPT` rows in view (fewer models: all of them),
        and the splitter gives it every row up to :data:`ROWS_SHOWN`, Try it the rest."""
        self.table.setMinimumHeight(self.table_height(max(1, min(rows, ROWS_KEPT))))
        wanted = min(rows, ROWS_SHOWN)
        if wanted == self._table_rows_given:
            return
        self._table_rows_given = wanted
        total = sum(self.splitter.sizes()) or self.splitter.height()
        table = self.table_height(max(wanted, 1))
        panel = max(total - table, self.try_it.minimumSizeHint().height())
        self.splitter.setSizes([max(table, total - panel), panel])

    def _set_tab_order(self) -> None:
        """Tab goes as the window is seen, whatever order the widgets were made in (the
        rows are made anew as models come and go): the banner's button, each row left to
        right, Try it, the first-run buttons (shown instead of the table), Copy API URL and
        the bottom row. Hidden and greyed-out widgets are passed over."""
        panel = self.try_it
        a11y.set_tab_order([self.install_button, *(w for row in self.rows.values() for w in row.controls),
                            panel.model_combo, panel.prompt, panel.send_button, panel.stop_button, panel.answer,
                            *self.first_run_buttons, self.copy_button, *self.bottom_buttons])

    def _group_item(self, row: int) -> QTableWidgetItem:
        """A heading row across the table, for one machine's or engine's models."""
        item = QTableWidgetItem("")
        item.setFlags(Qt.ItemFlag.ItemIsEnabled)
        font = item.font()
        font.setBold(True)
        item.setFont(font)
        self.table.setItem(row, 0, item)
        self.table.setSpan(row, 0, 1, len(COLUMNS))
        return item

    def _fit_widget_columns(self) -> None:
        header = self.table.horizontalHeader()
        for column, widths in ((COL_TIMEOUT, [r.timeout_combo.sizeHint().width() for r in self.rows.values()]),
                               (COL_ACTIONS, [r.buttons.sizeHint().width() for r in self.rows.values()])):
            wanted = max(widths + [header.sectionSizeHint(column)]) + 4
            if header.sectionSize(column) != wanted:
                header.resizeSection(column, wanted)

    def row_for(self, name: str) -> ModelTableRow:
        return self.rows[name]

    def _on_event(self, event: dict[str, Any]) -> None:
        if self.isVisible():
            if event.get("reason") in HISTORY_EVENTS:
                self.bridge.refresh_history()
            self.refresh()

    def _on_action_failed(self, title: str, message: str) -> None:
        self.show_message(f"{title}: {message}")
        if self.isVisible():
            self.refresh()

    def show_message(self, message: str) -> None:
        """Shows an error above the buttons (where there may be no tray to show it)."""
        self.message_label.setText(message)
        self.message_label.show()

    def _apply_colours(self) -> None:
        """The hint, the error and the banner in colours that read on the current theme."""
        self.hint_label.setStyleSheet(theme.text_style("hint", self))
        self.message_label.setStyleSheet(theme.text_style("error", self))
        # The banner's text keeps the theme's own colour, which reads on a tint of its window colour.
        self.engine_banner.setStyleSheet(
            f"QFrame#engine-banner {{ background: {theme.banner_background(self).name()};"
            f" border: 1px solid {theme.tone('warning', self).name()}; border-radius: 4px; }}")

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_colours()

    def _copy_url(self) -> None:
        if self.bridge.api_url:
            desktop.copy_text(f"{self.bridge.api_url}/v1")

    # ---- ticking only while visible ------------------------------------------------------------

    def _tick(self) -> None:
        """Each second only the countdowns change on screen; the memory figures (which change
        without events) are read again every :data:`MEMORY_EVERY` ticks. Rewriting every row,
        refitting the columns and checking llama-server's files each second cost the window
        about 0.8% of a core with five models counting down, against 0.06% for `siesta serve`."""
        self._ticks += 1
        if self._ticks % MEMORY_EVERY == 0:
            self.bridge.refresh_history()
            self.refresh(fresh=True)
            return
        now = self.bridge.now()
        for row in self.rows.values():
            row.tick(now)
        self.try_it.tick()

    def showEvent(self, event: QShowEvent) -> None:
        self.bridge.refresh_history()
        self.refresh(fresh=True)
        self._ticks = 0
        self.ticker.start()
        super().showEvent(event)
        if not event.spontaneous() and self._table_rows_given >= 0 and not self._shown_once:
            self._shown_once = True  # the splitter's sizes, now that the window has its own
            self.layout().activate()
            self._table_rows_given = -1
            self._give_table_room(len(self._layout))

    def hideEvent(self, event: QHideEvent) -> None:
        self.ticker.stop()
        super().hideEvent(event)

    def closeEvent(self, event: QCloseEvent) -> None:
        event.accept()
        if not self.shell.has_tray:
            self.shell.request_quit()
