"""The Settings dialog's "Memory" group: the memory budget and the free memory floor.

Each is a text field that takes what settings.toml takes (:mod:`app.core.config.memory_limits`:
"90%", "20GB", "off", or per device "ram: 16GB, gpu0: 90%"). Beside each field, what it
comes to on this computer's devices ("RAM 28.2 GB · GPU 0 21.6 GB" for "90%"), following
the typing; below them, the devices' totals. The figures come from the bridge's
``system`` (``GET /api/v1/system``'s shape), read off the GUI thread by the dialog.

The box only shows and reads values; the dialog checks, saves and pins them like its other
fields. Each field's accessible description is what it comes to, in words; a refused value
is outlined, and the totals drawn, in colours chosen against the palette (:mod:`app.ui.theme`).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QLineEdit, QWidget

from app.core.config.memory_limits import MemoryLimit, MemoryLimitError, parse_memory_limit
from app.core.config.sizes import format_bytes
from app.ui import theme

FIELDS = (
    ("memory_budget", "Memory budget", "memory-budget",
     "The most memory Siesta's models may use together on each device"),
    ("free_memory_floor", "Keep free for other programs", "free-memory-floor",
     "The free memory to keep on each device for other programs: below it, idle models are unloaded"),
)
"""``(setting, label, object name, what it means)`` of each field, in the order shown."""

CAPTIONS = {"memory_budget": "Memory &budget:", "free_memory_floor": "&Keep free for other programs:"}
"""Each field's caption, with its Alt+letter."""


def device_label(device: str) -> str:
    """``"ram"`` -> ``"RAM"``, ``"gpu0"`` -> ``"GPU 0"``."""
    return "RAM" if device == "ram" else "GPU " + device.removeprefix("gpu")


def devices_of(system: dict[str, Any] | None) -> list[tuple[str, int | None]]:
    """This computer's memories as ``(device, total)``: RAM, then each GPU; empty while
    unknown."""
    memory = (system or {}).get("memory") or {}
    out: list[tuple[str, int | None]] = []
    if memory.get("ram"):
        out.append(("ram", memory["ram"].get("total")))
    out.extend((str(d.get("id")), d.get("total")) for d in memory.get("devices") or [])
    return out


def amounts_text(limit: MemoryLimit, devices: list[tuple[str, int | None]]) -> str:
    """What ``limit`` comes to on each device: ``"RAM 28.2 GB · GPU 0 21.6 GB"``,
    ``"RAM off · GPU 0 20.0 GB"``, ``"off"``; the limit's own words while the devices are
    unknown."""
    if limit.is_off:
        return "off"
    if not devices:
        return limit.describe()
    parts = []
    for device, total in devices:
        amount = limit.for_device(device, total)
        parts.append(f"{device_label(device)} "
                     f"{format_bytes(amount) if amount is not None else limit.describe(device)}")
    return " · ".join(parts)


def totals_text(devices: list[tuple[str, int | None]]) -> str:
    """``"RAM 31.3 GB · GPU 0 24.0 GB"``, or ``"reading..."`` while unknown."""
    if not devices:
        return "reading..."
    return " · ".join(f"{device_label(d)} {format_bytes(t) if t else 'size not known'}" for d, t in devices)


class MemoryBox(QGroupBox):
    """The budget and floor fields, what each comes to, and the devices' totals."""

    edited = Signal(str)
    """The user typed in a field (its setting name)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Memory", parent)
        grid = QGridLayout(self)
        grid.setColumnStretch(2, 1)
        self.edits: dict[str, QLineEdit] = {}
        self.amount_labels: dict[str, QLabel] = {}
        self.labels: dict[str, str] = {}
        self._devices: list[tuple[str, int | None]] = []
        for row, (name, label, object_name, tip) in enumerate(FIELDS):
            edit = QLineEdit()
            edit.setObjectName(f"{object_name}-edit")
            edit.setPlaceholderText("90%, 20GB, off")
            edit.setMinimumWidth(edit.fontMetrics().horizontalAdvance("ram: 16GB, gpu0: 90%") + 16)
            edit.setToolTip(f"{tip}. A size (20GB), a share of the device's total (85%), off, "
                            "or per device (ram: 16GB, gpu0: 90%; devices not named are off)")
            edit.setAccessibleName(label)
            edit.textEdited.connect(lambda _text, n=name: self._typed(n))
            amount = QLabel()
            amount.setObjectName(f"{object_name}-amount")
            amount.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            caption = QLabel(CAPTIONS[name])
            caption.setBuddy(edit)
            grid.addWidget(caption, row, 0)
            grid.addWidget(edit, row, 1)
            grid.addWidget(amount, row, 2)
            self.edits[name] = edit
            self.amount_labels[name] = amount
            self.labels[name] = label
        self.totals_label = QLabel()
        self.totals_label.setObjectName("memory-totals")
        self.totals_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        grid.addWidget(QLabel("This computer:"), len(FIELDS), 0)
        grid.addWidget(self.totals_label, len(FIELDS), 1, 1, 2)
        self.show_system(None)
        self._apply_theme()

    def value(self, name: str) -> MemoryLimit | None:
        """The field's limit; None while its text is not one."""
        try:
            return parse_memory_limit(self.edits[name].text())
        except MemoryLimitError:
            return None

    def problem(self, name: str) -> str:
        """Why the field's text is not a limit (quoting it and listing the forms); ``""`` when it is."""
        try:
            parse_memory_limit(self.edits[name].text())
        except MemoryLimitError as exc:
            return str(exc)
        return ""

    def put(self, name: str, limit: MemoryLimit) -> None:
        """Shows ``limit`` in its one-line form ("90%", "ram: 16GB, gpu0: 90%")."""
        self.edits[name].setText(limit.to_text())
        self._style(name)
        self._show_amount(name)

    def show_system(self, system: dict[str, Any] | None) -> None:
        """New device figures (the bridge's ``system``)."""
        self._devices = devices_of(system)
        self.totals_label.setText(totals_text(self._devices))
        for name in self.edits:
            self._show_amount(name)

    def _show_amount(self, name: str) -> None:
        limit = self.value(name)
        amount = amounts_text(limit, self._devices) if limit is not None else ""
        self.amount_labels[name].setText(amount)
        self.edits[name].setAccessibleDescription(amount.replace(" · ", ", ") if limit is not None
                                                  else self.problem(name))

    def _style(self, name: str) -> None:
        self.edits[name].setStyleSheet(theme.error_border_style(self) if self.value(name) is None else "")

    def _apply_theme(self) -> None:
        """Hint and error colours chosen against the palette (again when it changes)."""
        self.totals_label.setStyleSheet(theme.text_style("hint", self))
        for name, edit in self.edits.items():
            if edit.styleSheet():  # outlined as refused: in the new palette's red
                self._style(name)

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.PaletteChange:
            self._apply_theme()

    def _typed(self, name: str) -> None:
        self._style(name)
        self._show_amount(name)
        self.edited.emit(name)
