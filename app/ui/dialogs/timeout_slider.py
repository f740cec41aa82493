"""A slider over the timeout scale (:mod:`app.ui.timeout_scale`: 0, 30 s, 1 min ... 8 h,
never) with the value as text beside it: the Settings dialog's global and per-model
timeouts.

A screen reader reads a slider's position as a number (0 to 12), so the slider's
accessible description says its value in words ("5 minutes", "never (kept loaded)").
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QWidget

from app.core.config.durations import Timeout
from app.ui import timeout_scale


class TimeoutSlider(QWidget):
    """A slider over the timeout scale with the value as text beside it.

    :meth:`set_value` may be given any duration: the slider sits at the nearest stop and
    the text shows the exact value, which :meth:`value` keeps until the user moves the
    slider. ``edited`` is emitted for the user's moves only. :meth:`set_accessible` names
    the slider for screen readers; its description follows the value.
    """

    edited = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, timeout_scale.MAX_INDEX)
        self.slider.setSingleStep(1)
        self.slider.setPageStep(1)
        self.slider.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.slider.setTickInterval(1)
        self.slider.setMinimumWidth(180)
        self.label = QLabel()
        self.label.setMinimumWidth(self.label.fontMetrics().horizontalAdvance("1h30m30s") + 4)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.label)
        self._value: Timeout = 0.0
        self._setting = False
        self._note = ""
        self.slider.valueChanged.connect(self._on_slider)
        self.set_value(300.0)

    def value(self) -> Timeout:
        return self._value

    def set_value(self, value: Timeout) -> None:
        self._setting = True
        try:
            self._value = value
            self.slider.setValue(timeout_scale.nearest_index(value))
            self._show(value)
        finally:
            self._setting = False

    def set_accessible(self, name: str, note: str = "") -> None:
        """The slider's accessible name ("Unload qwen when idle for"), and a note said after
        its value ("the global timeout")."""
        if self.slider.accessibleName() != name:
            self.slider.setAccessibleName(name)
        if note != self._note:
            self._note = note
            self._show(self._value)

    def _show(self, value: Timeout) -> None:
        self.label.setText(timeout_scale.short_label(value))
        self.slider.setToolTip("Unload when idle for " + timeout_scale.short_label(value)
                               if value is not None else "Keep loaded")
        words = timeout_scale.spoken_label(value)
        description = f"{words}, {self._note}" if self._note else words
        if self.slider.accessibleDescription() != description:
            self.slider.setAccessibleDescription(description)

    def _on_slider(self, index: int) -> None:
        if self._setting:
            return
        self._value = timeout_scale.seconds_at(index)
        self._show(self._value)
        self.edited.emit(self._value)
