"""The Settings dialog: global and per-model idle timeouts, server, notifications, login,
memory budget and floor, Ollama's port, and which llama-server is used.

"Also answer on Ollama's port 11434" writes ``ollama_port`` (or removes it): the second
listener comes at the next start. When the port was taken as this Siesta started (Ollama
itself running), the note under the checkbox says so.

The dialog also shows which llama-server loads use, its version, backend and llama.cpp
release, with Update, or that none was found, with a way to install one
(:mod:`app.ui.dialogs.engine_box`). "Copy diagnostics" puts ``siesta doctor``'s report on the
clipboard for a bug report (:mod:`app.ui.dialogs.diagnostics`).

Timeouts are set with sliders (:mod:`app.ui.dialogs.timeout_slider`: 0, 30 s, 1 min ... 8 h,
never), with the value beside each slider; the global one also has a field that takes
any duration ("7m", "1h30m"). One row per recipe shows its live state and countdown and
has a "Use global" toggle that greys its slider. The rows are built as they scroll into
view (:mod:`app.ui.dialogs.timeout_rows`), so the dialog opens quickly over many recipes.

The memory budget and floor are text fields (:mod:`app.ui.dialogs.memory_box`).

Keyboard: Tab follows the visual order (:meth:`SettingsDialog.focus_chain`) through every
model row, built or not; every field and button has an Alt+letter mnemonic, unique in the
dialog (a model row has none of its own: Alt+M goes to the first row). Screen readers:
every slider, toggle and field has an accessible name saying which model or setting it is,
and a slider's description says its value in words. Colours come from :mod:`app.ui.theme`
(chosen against the palette, light or dark).

OK saves and closes, Apply saves and stays, Cancel (or Esc, or closing the window)
discards. Nothing is written until then, every value is checked first (an error names
the field), and only what changed is written, through the same manager calls as the
CLI and the HTTP API (recipe files keep their comments).

The dialog listens to manager events: a recipe edited by hand while it is open updates
its row, unless the user has changed that row in the dialog; their edit wins until they
save or cancel. A recipe added or removed on disk adds or removes its row.

For a Siesta elsewhere (``siesta --connect URL``) the title names it, and only what its
API can change at run time is shown: host, port and llama-server are set on that machine,
and Start at login belongs to this one; Copy diagnostics, which describes this machine's
Siesta, is hidden (``siesta doctor`` on that machine says what it needs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QEvent, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QHideEvent, QShowEvent
from PySide6.QtWidgets import (
    QAbstractButton,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.core.config.atomic_write import in_order
from app.core.config.durations import USE_GLOBAL, DurationError, Timeout, format_duration, parse_duration
from app.core.config.settings import RUNTIME_SETTABLE, validate_setting
from app.ui import icons, theme
from app.ui.bridge import ManagerBridge
from app.ui.dialogs.diagnostics import DiagnosticsRow
from app.ui.dialogs.engine_box import EngineBox
from app.ui.dialogs.memory_box import MemoryBox
from app.ui.dialogs.timeout_rows import TimeoutList, TimeoutRow
from app.ui.dialogs.timeout_slider import TimeoutSlider
from app.ui.platform import autostart
from app.ui.platform.shell import Shell
from app.ui.ticker import SecondTicker

log = logging.getLogger(__name__)

OLLAMA_PORT = 11434
"""Ollama's own port, which apps that speak Ollama use unless told otherwise (setting ``ollama_port``)."""


@dataclass
class SettingField:
    """One editable setting: how to read and write its widget, and the value on disk."""

    name: str
    label: str
    widget: QWidget
    get: Callable[[], Any]
    put: Callable[[Any], None]
    to_raw: Callable[[Any], Any] = lambda v: v
    baseline: Any = None
    explain: Callable[[], str] | None = None  # why the widget's text is invalid (get() gave _INVALID)

    @property
    def dirty(self) -> bool:
        return self.get() != self.baseline


class SettingsDialog(QDialog):
    """Siesta's settings; build a new one each time it is opened."""

    def __init__(self, bridge: ManagerBridge, parent: QWidget | None = None, *, shell: Shell | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.setWindowTitle("Siesta Settings")
        self.setWindowIcon(icons.app_icon())
        self.setObjectName("settings-dialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self.saving = False
        self.fields: dict[str, SettingField] = {}
        settings = bridge.settings

        # ---- idle unload ----
        self.global_slider = TimeoutSlider()
        self.global_slider.setObjectName("global-slider")
        self.global_slider.set_accessible("Global idle timeout")
        self.global_edit = QLineEdit()
        self.global_edit.setObjectName("global-edit")
        self.global_edit.setAccessibleName("Global idle timeout, typed")
        self.global_edit.setAccessibleDescription("Any duration: 90s, 5m, 1h30m, 2h, 0 (at once) or never")
        self.global_edit.setPlaceholderText("90s, 5m, 1h30m, never")
        self.global_edit.setMaximumWidth(self.global_edit.fontMetrics().horizontalAdvance("1h30m30s__never") + 12)
        self.global_edit.setToolTip("Any duration: 90s, 5m, 1h30m, 2h, 0 (at once) or never")
        self.global_slider.edited.connect(self._on_global_slider)
        self.global_edit.textEdited.connect(self._on_global_typed)
        self.fields["global_unload_timeout"] = SettingField(
            "global_unload_timeout", "Global timeout", self.global_edit,
            get=self._global_edit_value, put=self._put_global, to_raw=format_duration)

        where = bridge.paths.recipes_dir if bridge.paths is not None else "its recipes folder"
        self.models_scroll = TimeoutList(self.global_slider, self.global_edit,
                                         f"No recipes yet: add one to {where} or run <code>siesta demo</code>.",
                                         bridge.now)
        self.models_box = self.models_scroll.box
        self.no_models_label = self.models_scroll.no_models_label
        self.models_scroll.edited.connect(self._changed)
        self.models_scroll.resized.connect(self.fit_models_area_soon)

        idle_box = QGroupBox("Unload idle models")
        idle_layout = QVBoxLayout(idle_box)
        idle_layout.addWidget(self.models_scroll, 1)

        # ---- server ----
        self.host_edit = QLineEdit()
        self.host_edit.setObjectName("host-edit")
        self.port_spin = QSpinBox()
        self.port_spin.setObjectName("port-spin")
        self.port_spin.setRange(1, 65535)
        self.max_spin = QSpinBox()
        self.max_spin.setObjectName("max-spin")
        self.max_spin.setRange(0, 64)
        self.max_spin.setSpecialValueText("no limit")
        self._add_field("host", "Host", self.host_edit, lambda: self.host_edit.text().strip(), self.host_edit.setText)
        self._add_field("port", "Port", self.port_spin, self.port_spin.value, self.port_spin.setValue)
        self._add_field("max_loaded_models", "Max loaded models", self.max_spin, self.max_spin.value,
                        self.max_spin.setValue)
        server_box = QGroupBox("Server")
        server_form = QFormLayout(server_box)
        server_form.addRow("&Host:", self.host_edit)
        server_form.addRow("&Port:", self.port_spin)
        self.restart_note = restart_note = QLabel("Host and port take effect the next time Siesta starts.")
        server_form.addRow("", restart_note)
        server_form.addRow("Max &loaded models:", self.max_spin)
        self.host_edit.setAccessibleName("Host")
        self.host_edit.setAccessibleDescription(restart_note.text())
        self.port_spin.setAccessibleName("Port")
        self.port_spin.setAccessibleDescription(restart_note.text())
        self.max_spin.setAccessibleName("Max loaded models")
        self.max_spin.setAccessibleDescription("How many models may be loaded at once; 0: no limit")

        # ---- notifications, login ----
        self.notify_idle_check = QCheckBox("When a model is &unloaded for being idle")
        self.notify_idle_check.setObjectName("notify-idle")
        self.notify_crash_check = QCheckBox("When a model c&rashes")
        self.notify_crash_check.setObjectName("notify-crash")
        self.notify_pressure_check = QCheckBox("When memory is gi&ven back to other programs")
        self.notify_pressure_check.setObjectName("notify-memory-pressure")
        for check in (self.notify_idle_check, self.notify_crash_check, self.notify_pressure_check):
            plain = check.text().replace("&", "")
            check.setAccessibleName("Notify " + plain[:1].lower() + plain[1:])
        self.notify_pressure_check.setToolTip("When idle models are unloaded because another program needs "
                                              "the memory, or when none can be")
        for name, label, check in (("notify_idle_unload", "Notify on idle unload", self.notify_idle_check),
                                   ("notify_crash", "Notify on crash", self.notify_crash_check),
                                   ("notify_memory_pressure", "Notify when memory is given back",
                                    self.notify_pressure_check)):
            self._add_field(name, label, check, check.isChecked, check.setChecked)
        self.autostart_check = QCheckBox("&Start Siesta when I log in")
        self.autostart_check.setObjectName("autostart")
        self.autostart_check.setAccessibleName("Start Siesta when I log in")
        self.autostart_check.setToolTip(f"Writes {autostart.entry_path()}")
        self.autostart_baseline = autostart.is_enabled()
        self.autostart_check.setChecked(self.autostart_baseline)
        self.autostart_check.toggled.connect(lambda _c: self._changed())
        desktop_box = QGroupBox("Desktop")
        desktop_layout = QVBoxLayout(desktop_box)
        desktop_layout.addWidget(QLabel("Show a notification:"))
        desktop_layout.addWidget(self.notify_idle_check)
        desktop_layout.addWidget(self.notify_crash_check)
        desktop_layout.addWidget(self.notify_pressure_check)
        desktop_layout.addSpacing(8)
        desktop_layout.addWidget(self.autostart_check)
        desktop_layout.addStretch(1)

        # ---- memory ----
        self.memory_box = MemoryBox()
        for name, label in self.memory_box.labels.items():
            self.fields[name] = SettingField(
                name, label, self.memory_box.edits[name], get=lambda n=name: self.memory_box.value(n) or _INVALID,
                put=lambda v, n=name: self.memory_box.put(n, v), to_raw=lambda v: v.to_setting(),
                explain=lambda n=name: self.memory_box.problem(n))
        self.memory_box.edited.connect(lambda _name: self._changed())
        self.budget_edit = self.memory_box.edits["memory_budget"]
        self.floor_edit = self.memory_box.edits["free_memory_floor"]

        # ---- a second listener on Ollama's port, for apps set to http://localhost:11434 ----
        self.ollama_port = settings.ollama_port or OLLAMA_PORT
        self.ollama_check = QCheckBox(f"Also ans&wer on Ollama's port {self.ollama_port}")
        self.ollama_check.setObjectName("ollama-port")
        self.ollama_check.setAccessibleName(f"Also answer on Ollama's port {self.ollama_port}")
        self.ollama_note = QLabel()
        self.ollama_note.setObjectName("ollama-note")
        self.ollama_note.setWordWrap(True)
        self._add_field("ollama_port", "Ollama's port", self.ollama_check,
                        lambda: self.ollama_port if self.ollama_check.isChecked() else None,
                        lambda value: self.ollama_check.setChecked(bool(value)))
        ollama_box = QGroupBox("Apps that speak Ollama")
        ollama_layout = QVBoxLayout(ollama_box)
        ollama_layout.addWidget(self.ollama_check)
        ollama_layout.addWidget(self.ollama_note)

        for name, field in self.fields.items():
            field.put(getattr(settings, name))
            field.baseline = field.get()
            pinned = bridge.fixed_by(name)
            if pinned:
                field.widget.setEnabled(False)
                field.widget.setToolTip(f"Fixed by {pinned} for this run")
                if field.widget is self.global_edit:
                    self.global_slider.setEnabled(False)
        self.global_slider.set_value(settings.global_unload_timeout)
        for widget in (self.host_edit,):
            widget.textEdited.connect(lambda _t: self._changed())
        for spin in (self.port_spin, self.max_spin):
            spin.valueChanged.connect(lambda _v: self._changed())
        for check in (self.notify_idle_check, self.notify_crash_check, self.notify_pressure_check):
            check.toggled.connect(lambda _c: self._changed())
        self.ollama_check.toggled.connect(lambda _c: (self._show_ollama_note(), self._changed()))
        self._show_ollama_note()

        # ---- errors and buttons ----
        self.error_label = QLabel()
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Apply
            | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.clicked.connect(self._on_button)
        std = QDialogButtonBox.StandardButton
        for which, label in ((std.Ok, "&OK"), (std.Apply, "&Apply"), (std.Cancel, "&Cancel")):
            self.buttons.button(which).setText(label)

        # ---- llama-server: path, version, installed engine, Install and Update ----
        self.engine_box = EngineBox(bridge, shell.show_install_engine if shell is not None else None)
        self.engine_path_label = self.engine_box.path_label
        self.engine_version_label = self.engine_box.version_label
        self.install_engine_button = self.engine_box.install_button

        # ---- Copy diagnostics: `siesta doctor`'s report on the clipboard, for a bug report ----
        self.diagnostics = DiagnosticsRow(bridge)

        lower = QHBoxLayout()
        lower.addWidget(server_box, 1)
        lower.addWidget(desktop_box, 1)
        bottom = QHBoxLayout()
        bottom.addWidget(self.diagnostics, 1)
        bottom.addWidget(self.buttons)
        layout = QVBoxLayout(self)
        layout.addWidget(idle_box, 1)
        layout.addLayout(lower)
        layout.addWidget(self.memory_box)
        layout.addWidget(ollama_box)
        layout.addWidget(self.engine_box)
        layout.addWidget(self.error_label)
        layout.addLayout(bottom)
        self.resize(800, 0)

        if bridge.target is not None:  # a second port is set on that machine
            self.fields.pop("ollama_port")
            ollama_box.hide()
            self._only_what_can_change_remotely(bridge.target.label, server_form.setRowVisible, restart_note)

        self._apply_theme()
        self.ticker = SecondTicker(self._tick, bridge.countdown_deadlines, bridge.now, self)
        bridge.modelEvent.connect(self._on_event)
        bridge.systemChanged.connect(self._show_memory)
        self._show_memory()
        bridge.refresh_system()
        self._sync_rows()
        self._fix_tab_order()
        self._changed()

    @property
    def rows(self) -> dict[str, TimeoutRow]:
        """Each recipe's row by name, built or not (its widgets exist while it is in view)."""
        return self.models_scroll.rows

    def _chain_ends(self) -> tuple[list[QWidget], list[QWidget]]:
        """The widgets that take keyboard focus before the model rows, and after them."""
        after: list[QWidget] = [
            self.host_edit, self.port_spin, self.max_spin,
            self.notify_idle_check, self.notify_crash_check, self.notify_pressure_check, self.autostart_check,
            self.budget_edit, self.floor_edit, self.ollama_check, self.install_engine_button,
            self.engine_box.update_button, self.diagnostics.button]
        box = self.buttons.layout()
        after += [w for i in range(box.count()) if isinstance(w := box.itemAt(i).widget(), QAbstractButton)]
        return [self.global_slider.slider, self.global_edit], after

    def focus_chain(self) -> list[QWidget]:
        """The widgets that take keyboard focus, in the visual order (top to bottom, left to
        right within a row): the timeouts (of the rows built now), Server, Desktop, Memory,
        llama-server, Copy diagnostics, the buttons."""
        before, after = self._chain_ends()
        return before + self.models_scroll.built_chain() + after

    def _fix_tab_order(self) -> None:
        """Qt's focus chain follows :meth:`focus_chain` too (widgets join it in the order
        they were made; a row built later is put in its place by the list)."""
        chain = self.focus_chain()
        for first, second in zip(chain, chain[1:]):
            QWidget.setTabOrder(first, second)

    def focusNextPrevChild(self, next: bool) -> bool:  # noqa: A002 - Qt's name
        """Tab and Shift+Tab follow :meth:`focus_chain` over every model row, built or not:
        the row focus moves to is built and scrolled into view."""
        target = self._tab_target(self.focusWidget(), next)
        if target is None:
            return super().focusNextPrevChild(next)
        target.setFocus(Qt.FocusReason.TabFocusReason if next else Qt.FocusReason.BacktabFocusReason)
        if self.models_scroll.isAncestorOf(target):
            self.models_scroll.reveal(target)
        return True

    def _tab_target(self, current: QWidget | None, forward: bool) -> QWidget | None:
        """The next (or previous) widget that takes Tab after ``current``; None when
        ``current`` is not in the chain."""
        before, after = self._chain_ends()
        rows = self.models_scroll
        in_rows = 2 * len(rows.order)
        size = len(before) + in_rows + len(after)
        if current in before:
            here = before.index(current)
        elif current in after:
            here = len(before) + in_rows + after.index(current)
        elif (at := rows.position_of(current)) is not None:
            here = len(before) + 2 * at[0] + at[1]
        else:
            return None
        rows_shown = rows.isVisibleTo(self)
        for step in range(1, size):
            p = (here + (step if forward else -step)) % size
            if p < len(before) or p >= len(before) + in_rows:
                widget = before[p] if p < len(before) else after[p - len(before) - in_rows]
                if (widget.isEnabled() and widget.isVisibleTo(self)
                        and widget.focusPolicy().value & Qt.FocusPolicy.TabFocus.value):
                    return widget
            elif rows_shown and rows.can_focus(*divmod(p - len(before), 2)):
                return rows.focus_widget(*divmod(p - len(before), 2))
        return None

    def _only_what_can_change_remotely(self, label: str, set_row_visible: Callable[[QWidget, bool], None],
                                       restart_note: QLabel) -> None:
        self.setWindowTitle(f"Siesta settings — {label}")
        for name in [n for n in self.fields if n not in RUNTIME_SETTABLE]:  # host and port
            set_row_visible(self.fields.pop(name).widget, False)
        set_row_visible(restart_note, False)
        self.autostart_check.hide()
        self.engine_box.hide()
        self.diagnostics.hide()  # it describes this machine's Siesta: `siesta doctor` there

    def _show_ollama_note(self) -> None:
        """Under the Ollama checkbox: what it does, when it applies, and whether the port was
        taken when this Siesta started (it then answers on its main port only)."""
        problems = getattr(getattr(self.bridge.manager, "loaded_settings", None), "problems", {})
        problem = problems.get("ollama_port") if self.ollama_check.isChecked() else None
        if problem:
            text = f"{problem}. Stop the program that holds it, then restart Siesta."
        else:
            text = (f"Apps set to http://localhost:{self.ollama_port} (Open WebUI, editors, scripts) reach Siesta "
                    "without a change. Takes effect the next time Siesta starts.")
        self.ollama_note.setText(text)
        self.ollama_check.setAccessibleDescription(text)

    def _add_field(self, name: str, label: str, widget: QWidget, get: Callable[[], Any],
                   put: Callable[[Any], None]) -> None:
        self.fields[name] = SettingField(name, label, widget, get=get, put=put)

    def _show_memory(self) -> None:
        self.memory_box.show_system(self.bridge.system)

    def _apply_theme(self) -> None:
        """Error and hint colours chosen against the palette (again when it changes)."""
        self.error_label.setStyleSheet(theme.text_style("error", self))
        self.restart_note.setStyleSheet(theme.text_style("hint", self))
        self._style_global_edit()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_theme()

    # ---- the global timeout --------------------------------------------------------------------

    def global_value(self) -> Timeout:
        """The global timeout as edited now (the field's value when valid, else the slider's)."""
        value = self._global_edit_value()
        return self.global_slider.value() if value is _INVALID else value

    def _global_edit_value(self) -> Any:
        try:
            return parse_duration(self.global_edit.text())
        except DurationError:
            return _INVALID

    def _style_global_edit(self) -> None:
        invalid = self._global_edit_value() is _INVALID
        self.global_edit.setStyleSheet(theme.error_border_style(self) if invalid else "")

    def _put_global(self, value: Timeout) -> None:
        self.global_edit.setText(format_duration(value))
        self.global_slider.set_value(value)
        self._style_global_edit()

    def _on_global_slider(self, value: Timeout) -> None:
        self.global_edit.setText(format_duration(value))
        self._style_global_edit()
        self._global_changed()

    def _on_global_typed(self, typed: str) -> None:
        value = self._global_edit_value()
        self._style_global_edit()
        if value is not _INVALID:
            self.global_slider.set_value(value)
        self._global_changed()

    def _global_changed(self) -> None:
        self.models_scroll.show_global(self.global_value())
        self._changed()

    # ---- rows from the manager's models ----------------------------------------------------------

    def _sync_rows(self) -> None:
        self.models_scroll.set_snapshots(self.bridge.snapshots(), self.global_value())
        self._tick()
        self._fit_models_area()

    def fit_models_area_soon(self) -> None:
        """Measures the rows again once Qt has laid out what just changed."""
        QTimer.singleShot(0, self, self._fit_models_area)

    def _fit_models_area(self) -> None:
        """Tall enough for every row up to a limit; past it the rows scroll. Measured again
        once shown (styled) and when rows or their names change."""
        self.models_scroll.fit()
        if self.isVisible() and self.height() < self.sizeHint().height():
            self.resize(self.width(), self.sizeHint().height())  # grow with the rows, not squeeze them

    def _on_event(self, event: dict[str, Any]) -> None:
        self._refresh_settings()
        self._sync_rows()
        self._changed()

    def _refresh_settings(self) -> None:
        """Shows settings changed behind the dialog's back (settings.toml edited by hand),
        except in the fields the user is editing."""
        settings = self.bridge.settings
        for name, field in self.fields.items():
            live = getattr(settings, name)
            if name == "host":
                live = str(live)
            if not field.dirty and live != field.baseline:
                field.put(live)
                field.baseline = field.get()
                if name == "global_unload_timeout":
                    self._global_changed()

    # ---- countdowns -----------------------------------------------------------------------------

    def _tick(self) -> None:
        self.models_scroll.tick(self.bridge.now())

    def showEvent(self, event: QShowEvent) -> None:
        self._tick()
        self.ticker.start()
        super().showEvent(event)
        self._fit_models_area()  # the style and fonts reach the rows only now
        self.fit_models_area_soon()  # and once more after Qt has laid them out with them

    def hideEvent(self, event: QHideEvent) -> None:
        self.ticker.stop()
        super().hideEvent(event)

    # ---- what changed -------------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return (any(f.dirty for f in self.fields.values()) or any(r.dirty for r in self.rows.values())
                or self.autostart_check.isChecked() != self.autostart_baseline)

    def _changed(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Apply).setEnabled(self.dirty and not self.saving)

    def _validate(self) -> tuple[str, QWidget] | None:
        """The first invalid value as ``(message naming the field, its widget)``, or None."""
        for field in self.fields.values():
            if not field.dirty or not field.widget.isEnabled():
                continue
            value = field.get()
            if value is _INVALID and field.explain is not None:
                return f"{field.label}: {field.explain()}", field.widget
            if value is _INVALID:
                try:
                    parse_duration(self.global_edit.text())
                except DurationError as exc:
                    return f"{field.label}: {exc}", field.widget
            try:
                validate_setting(field.name, field.to_raw(value))
            except ValueError as exc:
                message = str(exc).removeprefix(f"{field.name}: ")
                return f"{field.label}: {message}", field.widget
        return None

    # ---- saving ---------------------------------------------------------------------------------------

    def _on_button(self, button: QAbstractButton) -> None:
        role = self.buttons.standardButton(button)
        if role == QDialogButtonBox.StandardButton.Cancel:
            self.reject()
        elif role == QDialogButtonBox.StandardButton.Apply:
            self.apply()
        elif role == QDialogButtonBox.StandardButton.Ok:
            self.apply(close=True)

    def apply(self, *, close: bool = False) -> Any:
        """Checks and saves every change; with ``close``, closes once all is saved.
        Returns the saving task (None when nothing needed saving or a value is invalid)."""
        if self.saving:
            return None
        problem = self._validate()
        if problem is not None:
            self._show_error(*problem)
            return None
        self._show_error("", None)
        if not self.dirty:
            if close:
                self.accept()
            return None
        self._set_saving(True)
        task = self.bridge.run(self._save(), "save settings", report=False)
        task.add_done_callback(lambda t: self._saved(t, close))
        return task

    async def _save(self) -> None:
        for field in self.fields.values():
            if field.dirty and field.widget.isEnabled():
                value = field.get()
                try:
                    await self.bridge.set_setting(field.name, field.to_raw(value), report=False)
                except Exception as exc:  # noqa: BLE001 - shown to the user, naming the field
                    raise FieldError(field.label, exc, field.widget) from exc
                field.baseline = value
        global_value = self.global_value()
        for name, row in list(self.rows.items()):
            if not row.dirty:
                continue
            use_global, value = row.current()
            try:
                await self.bridge.set_model_timeout(name, USE_GLOBAL if use_global else value, report=False)
            except Exception as exc:  # noqa: BLE001
                raise FieldError(f"Timeout of {name}", exc, self._row_slider(name)) from exc
            row.baseline = (use_global, None if use_global else value)
            snapshot = self.bridge.snapshot(name)
            if snapshot is not None:
                row.sync(snapshot, global_value)
        wanted = self.autostart_check.isChecked()
        if wanted != self.autostart_baseline:
            try:
                await in_order(autostart.set_enabled, wanted,  # off the loop: its fsync can be slow
                               autostart.config_dir_argument(self.bridge.paths.config_dir),
                               icon=str(icons.icons_dir() / icons.APP_ICON_FILE))
            except OSError as exc:
                raise FieldError("Start at login", exc, self.autostart_check) from exc
            self.autostart_baseline = wanted

    def _row_slider(self, name: str) -> QWidget | None:
        """A row's slider, built if it was not (to focus it)."""
        index = self.models_scroll.index.get(name)
        return self.models_scroll.focus_widget(index, 0) if index is not None else None

    def _saved(self, task: Any, close: bool) -> None:
        self._set_saving(False)
        if task.cancelled():
            return
        exc = task.exception()
        if isinstance(exc, FieldError):
            self._show_error(str(exc), exc.widget)
        elif exc is not None:
            log.error("saving settings failed", exc_info=exc)
            self._show_error(f"Saving failed: {exc}", None)
        elif close:
            self.accept()
        self._changed()

    def _set_saving(self, saving: bool) -> None:
        self.saving = saving
        for std in (QDialogButtonBox.StandardButton.Ok, QDialogButtonBox.StandardButton.Apply):
            self.buttons.button(std).setEnabled(not saving)
        self._changed()

    def _show_error(self, message: str, widget: QWidget | None) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))
        if widget is not None:
            widget.setFocus()
            if self.models_scroll.isAncestorOf(widget):
                self.models_scroll.reveal(widget)

    # ---- closing ----------------------------------------------------------------------------------------

    def reject(self) -> None:
        if self.saving:
            return  # let the save finish; its result is shown here
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.saving:
            event.ignore()
            return
        super().closeEvent(event)

    def done(self, result: int) -> None:
        self.ticker.stop()
        self.engine_box.detach()
        self.diagnostics.detach()
        for signal, slot in ((self.bridge.modelEvent, self._on_event), (self.bridge.systemChanged, self._show_memory)):
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        super().done(result)


class _Invalid:
    def __repr__(self) -> str:
        return "<invalid>"


_INVALID: Any = _Invalid()


class FieldError(Exception):
    """A value that could not be saved; the message starts with the field's label."""

    def __init__(self, label: str, error: BaseException, widget: QWidget | None) -> None:
        super().__init__(f"{label}: {error}")
        self.widget = widget
