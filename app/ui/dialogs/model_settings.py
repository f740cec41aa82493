""""Model settings...": one model's load settings, edited in its recipe.

The fields read the recipe's ``args`` through :mod:`app.core.models.llama_args` (the parser the
memory estimate uses), so every form llama-server takes shows: ``-c 4096``,
``--ctx-size=4096``, ``-ngl 99``, ``--n-gpu-layers=auto``, ``-t 4``, ``-np 2``. Saving
edits those options where they were written (``with_value``) and leaves every other
argument alone; they show as one line of extra arguments. The recipe is written through
the bridge (``ModelManager.set_model_settings``), which keeps the user's comments; a
running server becomes stale, or restarts at once with "Save and reload now".

The memory estimate beside the memory field follows the context size: it is computed from
the GGUF header (``estimate_llamacpp``) in a worker thread, 300 ms after the last change.
A ``command`` recipe has no llama-server arguments: only its memory estimate is editable.

Each field's label has its letter (Alt+C the context size, ...), Tab goes down the fields
and then along the buttons, and each field's accessible name names the model ("Context
size for qwen"), for a screen reader user with two of these dialogs open.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.core.config.sizes import SizeError, format_bytes, parse_size
from app.core.memory.gguf_estimate import estimate_llamacpp
from app.core.models.llama_args import ArgsError, LlamaArgs, with_value, without
from app.ui import a11y, theme
from app.ui.bridge import ManagerBridge

log = logging.getLogger(__name__)

ESTIMATE_DELAY_MS = 300
STALE_TEXT = "stale: reloads with these settings at its next load"
COMMAND_NOTE = "This model runs its own command, not llama-server: only its memory estimate can be set here."
FIELD_OPTIONS = ("ctx_size", "n_gpu_layers", "threads", "parallel")
"""The llama-server options that have a field; every other argument is an extra one."""


def size_text(size: int | None) -> str:
    """A byte count as a person writes it in a recipe: ``6GB``, ``512MB``, else bytes."""
    if size is None:
        return ""
    for unit, power in (("GB", 3), ("MB", 2)):
        if size and size % 1024 ** power == 0:
            return f"{size // 1024 ** power}{unit}"
    return str(size)


def extra_args(args: list[str]) -> list[str]:
    """The arguments no field covers, in order."""
    for option in FIELD_OPTIONS:
        args = without(args, option)
    return args


def _field_tokens(args: list[str], extra: list[str]) -> list[str]:
    """The tokens of ``args`` that are not in ``extra`` (a subsequence of it): the field options."""
    out: list[str] = []
    k = 0
    for token in args:
        if k < len(extra) and token == extra[k]:
            k += 1
        else:
            out.append(token)
    return out


class FieldError(ValueError):
    """A value the dialog cannot save; the message names the field."""


def _whole_number(label: str, text: str, minimum: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text, 10)
    except ValueError:
        raise FieldError(f"{label}: {text!r} is not a whole number") from None
    if value < minimum:
        raise FieldError(f"{label}: {value} is too small (at least {minimum}; empty = automatic)")
    return value


class ModelSettingsDialog(QDialog):
    """The load settings of model ``name``; saving writes its recipe through the bridge."""

    def __init__(self, bridge: ManagerBridge, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.bridge = bridge
        self.name = name
        self.setObjectName("model-settings")
        self.setWindowTitle(f"Model settings: {name}")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self._save_task: asyncio.Task[Any] | None = None
        self._estimate_task: asyncio.Task[Any] | None = None
        self.estimate_runs = 0  # estimates finished (for tests)
        self.estimate_total: int | None = None
        recipe = self._recipe()
        self.is_command = recipe is not None and recipe.backend == "command"
        self.original_args: list[str] = list(recipe.args) if recipe is not None else []
        self.original_model: Path | None = recipe.model if recipe is not None else None
        self.original_extra = extra_args(self.original_args)

        layout = QVBoxLayout(self)
        self.note = QLabel(COMMAND_NOTE if self.is_command else
                           "These settings are the recipe's arguments to llama-server; empty means llama-server's default.")
        self.note.setWordWrap(True)
        layout.addWidget(self.note)
        self.form = QFormLayout()
        layout.addLayout(self.form)

        self.ctx_edit = self._line("ctx-size", "&Context size",
                                   "How many tokens the model keeps in mind at once (prompt and answer); "
                                   "empty = the model's own. More takes more memory.")
        self.ngl_combo = QComboBox()
        self.ngl_combo.setEditable(True)
        self.ngl_combo.addItems(["", "auto", "all"])
        self.ngl_combo.setObjectName("gpu-layers")
        self._add_row(self.ngl_combo, "&GPU layers",
                      "How many of the model's layers run on the GPU: auto (as many as fit), all, or a number; "
                      "0 = CPU only.")
        self.threads_edit = self._line("threads", "&Threads",
                                       "CPU threads used for generation; empty = llama-server chooses.")
        self.parallel_edit = self._line("parallel", "&Parallel slots",
                                        "How many requests are answered at once; they share the context size. "
                                        "Empty = automatic.")
        self.model_edit = QLineEdit()
        self.model_edit.setObjectName("model-file")
        self.browse_button = QPushButton("&Browse...")
        self.browse_button.setObjectName("browse")
        self.browse_button.setAccessibleName(f"Choose the model file of {name}")
        self.browse_button.clicked.connect(self._browse)
        model_row = QWidget()
        row_layout = QHBoxLayout(model_row)
        row_layout.setContentsMargins(0, 0, 0, 0)
        row_layout.addWidget(self.model_edit, 1)
        row_layout.addWidget(self.browse_button)
        self._add_row(self.model_edit, "Model &file", "The GGUF file llama-server loads.", widget=model_row)
        self.extra_edit = self._line("extra-args", "E&xtra arguments",
                                     "Any other llama-server arguments, as on a command line (quotes allowed).")
        self.memory_edit = self._line("memory-estimate", "&Memory estimate",
                                      "The memory this model needs when loaded, such as 6GB; "
                                      "empty = estimated from the model file and the settings above.")
        self.estimate_label = a11y.StatusLabel(f"Estimated memory of {name}", "estimate")
        self.form.addRow("", self.estimate_label)

        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.error_label = QLabel()
        self.error_label.setObjectName("error")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet(theme.text_style("error", self.error_label))
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.hide()
        layout.addWidget(self.error_label)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.save_button = QPushButton("&Save")
        self.save_button.setObjectName("save")
        self.save_button.setDefault(True)
        self.reload_button = QPushButton("Save and &reload now")
        self.reload_button.setObjectName("reload")
        self.close_button = QPushButton("C&lose")
        self.close_button.setObjectName("close")
        for button in (self.save_button, self.reload_button, self.close_button):
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.save_button.clicked.connect(lambda: self.save(reload_now=False))
        self.reload_button.clicked.connect(lambda: self.save(reload_now=True))
        self.close_button.clicked.connect(self.close)
        a11y.set_tab_order([self.ctx_edit, self.ngl_combo, self.threads_edit, self.parallel_edit, self.model_edit,
                            self.browse_button, self.extra_edit, self.memory_edit, self.save_button,
                            self.reload_button, self.close_button])

        self._estimate_timer = QTimer(self)
        self._estimate_timer.setSingleShot(True)
        self._estimate_timer.setInterval(ESTIMATE_DELAY_MS)
        self._estimate_timer.timeout.connect(self._start_estimate)
        self.fill()
        for edit in (self.ctx_edit, self.threads_edit, self.parallel_edit, self.model_edit, self.extra_edit):
            edit.textChanged.connect(self._schedule_estimate)
        self.ngl_combo.currentTextChanged.connect(self._schedule_estimate)
        self.memory_edit.textChanged.connect(self._schedule_estimate)
        for widget in (self.ctx_edit, self.ngl_combo, self.threads_edit, self.parallel_edit, self.model_edit,
                       self.browse_button, self.extra_edit):
            widget.setEnabled(not self.is_command)
        self.bridge.modelEvent.connect(self._on_event)
        self._update_state()
        self._schedule_estimate()

    # ---- building ----------------------------------------------------------------------

    def _line(self, object_name: str, label: str, explanation: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setObjectName(object_name)
        self._add_row(edit, label, explanation)
        return edit

    def _add_row(self, editor: QWidget, label: str, explanation: str, widget: QWidget | None = None) -> None:
        title = QLabel(label)
        title.setBuddy(editor)  # the mnemonic (Alt+letter) focuses the field
        editor.setAccessibleName(f"{label.replace('&', '')} for {self.name}")
        editor.setAccessibleDescription(explanation)
        editor.setToolTip(explanation)
        help_label = QLabel(explanation)
        help_label.setWordWrap(True)
        help_label.setStyleSheet(theme.text_style("hint", help_label))
        box = QWidget()
        box_layout = QVBoxLayout(box)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.setSpacing(2)
        box_layout.addWidget(widget or editor)
        box_layout.addWidget(help_label)
        self.form.addRow(title, box)

    def _browse(self) -> None:
        current = self.model_edit.text().strip()
        start = str(Path(current).expanduser().parent) if current else str(Path.home())
        chosen, _ = QFileDialog.getOpenFileName(self, f"Model file of {self.name}", start,
                                                "GGUF models (*.gguf);;All files (*)")
        if chosen:
            self.model_edit.setText(chosen)
            self.model_edit.setFocus()

    def _recipe(self) -> Any:
        return self.bridge.recipe_of(self.name)

    def fill(self) -> None:
        """Shows the recipe's values."""
        recipe = self._recipe()
        parsed = LlamaArgs.parse([])
        try:
            parsed = LlamaArgs.parse(self.original_args)
        except ArgsError as exc:
            self._show_error(f"The recipe's arguments: {exc}")
        self.ctx_edit.setText("" if parsed.ctx_size is None else str(parsed.ctx_size))
        self.ngl_combo.setCurrentText("" if parsed.n_gpu_layers is None else str(parsed.n_gpu_layers))
        self.threads_edit.setText("" if parsed.threads is None else str(parsed.threads))
        self.parallel_edit.setText("" if parsed.parallel is None else str(parsed.parallel))
        self.model_edit.setText(str(self.original_model) if self.original_model else "")
        self.extra_edit.setText(shlex.join(self.original_extra))
        self.memory_edit.setText(size_text(recipe.memory_estimate) if recipe is not None else "")

    # ---- reading the fields --------------------------------------------------------------

    def new_args(self) -> list[str]:
        """The recipe's ``args`` as the fields say: the field options edited in place, the
        extra arguments as typed. FieldError names the field that is wrong."""
        try:
            extra = shlex.split(self.extra_edit.text())
        except ValueError as exc:
            raise FieldError(f"Extra arguments: {exc}") from None
        if extra == self.original_extra:
            args = list(self.original_args)
        else:
            args = extra + _field_tokens(self.original_args, self.original_extra)
        ngl = self.ngl_combo.currentText().strip()
        if ngl and ngl not in ("auto", "all"):
            _whole_number("GPU layers", ngl, 0)
        values: list[tuple[str, Any, str]] = [
            ("ctx_size", _whole_number("Context size", self.ctx_edit.text(), 0), "Context size"),
            ("n_gpu_layers", ngl or None, "GPU layers"),
            ("threads", _whole_number("Threads", self.threads_edit.text(), 1), "Threads"),
            ("parallel", _whole_number("Parallel slots", self.parallel_edit.text(), 1), "Parallel slots"),
        ]
        for option, value, label in values:
            try:
                args = with_value(args, option, value)
            except ArgsError as exc:
                raise FieldError(f"{label}: {exc}") from None
        try:
            LlamaArgs.parse(args)
        except ArgsError as exc:
            raise FieldError(f"Extra arguments: {exc}") from None
        return args

    def new_model(self) -> Path | None:
        """The model file if the field changed it (None: unchanged)."""
        text = self.model_edit.text().strip()
        if not text:
            raise FieldError("Model file: give the GGUF file to load")
        path = Path(text).expanduser()
        recipe = self._recipe()
        if not path.is_absolute() and recipe is not None:
            path = (recipe.path.parent / path).resolve()
        if path == self.original_model:
            return None
        if not path.is_file():
            raise FieldError(f"Model file: file not found: {path}")
        return path

    def new_memory_estimate(self) -> int | None:
        text = self.memory_edit.text().strip()
        if not text:
            return None
        try:
            return parse_size(text)
        except SizeError as exc:
            raise FieldError(f"Memory estimate: {exc}") from None

    # ---- saving ------------------------------------------------------------------------

    def save(self, *, reload_now: bool = False) -> asyncio.Task[Any] | None:
        """Checks every field, then writes them all at once; an error names the field and
        writes nothing."""
        if self._save_task is not None and not self._save_task.done():
            return None
        try:
            memory = self.new_memory_estimate()
            args = None if self.is_command else self.new_args()
            model = None if self.is_command else self.new_model()
        except FieldError as exc:
            self._show_error(str(exc))
            return None
        self._show_error("")
        self.status_label.setText("Saving...")
        self._set_busy(True)
        task = self.bridge.set_model_settings(self.name, args=args, model=model, memory_estimate=memory,
                                              reload_now=reload_now, report=False)
        self._save_task = task
        task.add_done_callback(lambda t: self._saved(t, args, model, reload_now))
        return task

    def _saved(self, task: asyncio.Task[Any], args: list[str] | None, model: Path | None, reloaded: bool) -> None:
        import shiboken6

        if not shiboken6.isValid(self):
            if not task.cancelled():
                task.exception()
            return
        self._set_busy(False)
        if task.cancelled():
            self.status_label.setText("")
            return
        exc = task.exception()
        if exc is not None:
            self.status_label.setText("")
            self._show_error(f"Could not save the settings of {self.name}: {exc}")
            return
        if args is not None:
            self.original_args = args
            self.original_extra = extra_args(args)
        if model is not None:
            self.original_model = model
        self._update_state(saved="Saved and reloaded." if reloaded else "Saved.")
        a11y.announce(self.status_label, self.status_label.text())

    def _set_busy(self, busy: bool) -> None:
        self.save_button.setEnabled(not busy)
        self.reload_button.setEnabled(not busy and self._running())

    def _show_error(self, message: str) -> None:
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))
        if message:
            a11y.announce(self.error_label, message, assertive=True)

    # ---- state: loaded, stale ------------------------------------------------------------

    def _running(self) -> bool:
        snapshot = self.bridge.snapshot(self.name)
        return snapshot is not None and snapshot["state"] in ("loading", "ready")

    def _on_event(self, event: dict[str, Any]) -> None:
        if event["model"]["name"] == self.name:
            self._update_state()

    def _update_state(self, saved: str | None = None) -> None:
        snapshot = self.bridge.snapshot(self.name)
        busy = self._save_task is not None and not self._save_task.done()
        self.reload_button.setEnabled(self._running() and not busy)
        parts = [saved] if saved else []
        if snapshot is not None and snapshot.get("stale"):
            parts.append(STALE_TEXT)
        if saved or not busy:
            self.status_label.setText("  ".join(parts))

    # ---- the memory estimate -------------------------------------------------------------

    def _schedule_estimate(self, *_: Any) -> None:
        self._estimate_timer.start()

    def _start_estimate(self) -> None:
        if self.is_command:
            self.estimate_label.setText("")
            return
        try:
            args = self.new_args()
            model = self.new_model() or self.original_model
        except FieldError:
            self.estimate_label.setText("Estimated memory: -")
            return
        if self._estimate_task is not None and not self._estimate_task.done():
            self._estimate_task.cancel()
        gpu_free = self._gpu_free()
        task = asyncio.ensure_future(asyncio.to_thread(estimate_llamacpp, model, args, gpu_free))
        self._estimate_task = task
        task.add_done_callback(self._estimated)

    def _gpu_free(self) -> dict[str, int | None]:
        memory = (self.bridge.system or {}).get("memory") or {}
        out: dict[str, int | None] = {}
        for device in memory.get("devices") or []:
            free = device.get("free")
            if free is None and device.get("total") is not None and device.get("used") is not None:
                free = device["total"] - device["used"]
            out[str(device.get("id"))] = free
        return out

    def _estimated(self, task: asyncio.Task[Any]) -> None:
        import shiboken6

        if task.cancelled():
            return
        exc = task.exception()
        if not shiboken6.isValid(self) or task is not self._estimate_task:
            return
        self.estimate_runs += 1
        estimate = None if exc is not None else task.result()
        if estimate is None:
            self.estimate_label.setText("Estimated memory: unknown (the model file cannot be read)")
            return
        devices = " · ".join(f"{'RAM' if d == 'ram' else 'GPU ' + d.removeprefix('gpu')} {format_bytes(v)}"
                             for d, v in estimate.by_device.items() if v)
        text = f"Estimated memory: {format_bytes(estimate.total)}"
        if devices and len(estimate.by_device) > 1:
            text += f" ({devices})"
        if self.memory_edit.text().strip():
            text += "; the memory estimate above is used instead"
        self.estimate_label.setText(text)
        self.estimate_total = estimate.total

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._estimate_timer.stop()
        if self._estimate_task is not None:
            self._estimate_task.cancel()
        try:
            self.bridge.modelEvent.disconnect(self._on_event)
        except (RuntimeError, TypeError):
            pass
        super().closeEvent(event)
