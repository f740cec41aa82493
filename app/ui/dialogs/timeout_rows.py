"""The Settings dialog's list of idle timeouts: the column headings, the global timeout's
row, and one row per recipe (name, state, slider, "Use global" toggle, countdown).

Rows are real widgets, so the keyboard and screen readers reach them (a row painted by a
delegate would not be), but only the rows in view, and a margin around it, are built: a
dialog over a thousand recipes opens as quickly as one over ten. Rows far out of view are
let go again. What a row holds (the recipe's value, the user's choice) lives apart from
its widgets, in :class:`TimeoutRow`, so a row never built keeps its value untouched and
Save still sees every row the user changed.

Tab reaches every row in order: the dialog asks :meth:`TimeoutList.can_focus` about rows
not built yet and :meth:`TimeoutList.focus_widget` builds the one focus moves to.
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, Qt, Signal
from PySide6.QtGui import QFocusEvent, QFontMetrics, QResizeEvent, QShowEvent
from PySide6.QtWidgets import QCheckBox, QFrame, QHBoxLayout, QLabel, QLineEdit, QScrollArea, QVBoxLayout, QWidget

from app.core.config.durations import Timeout
from app.ui import text
from app.ui.dialogs.timeout_slider import TimeoutSlider

MAX_MODELS_AREA = 340  # pixels of recipe rows before they scroll
BUILD_MARGIN = 120  # pixels above and below the view whose rows are built before they scroll in
KEEP_MARGIN = 1000  # rows further than this from the view are let go
COLUMN_SPACING = 14
ROW_SPACING = 6
STATE_SAMPLES = ("State", "not loaded", "unloading...", "loading... 99 s", "busy (2 requests)", "invalid recipe")
ESTIMATE_SAMPLE = "needs ~99.9 GB"


@dataclass
class Columns:
    """Widths of the columns beside the slider, shared by the headings, the global row and
    every recipe row so that their sliders line up."""

    name: int = 80
    state: int = 80
    toggle: int = 90
    countdown: int = 80


class TimeoutRow:
    """One recipe's timeout: what its recipe says (``baseline``), what the user chose, and,
    while the row is built, its widgets."""

    def __init__(self, name: str, edited: Callable[[], None]) -> None:
        self.name = name
        self._edited = edited
        self.snapshot: text.Snapshot = {}
        self.baseline: tuple[bool, Timeout] = (True, None)
        self.chose_global = True
        self.own_value: Timeout = None  # the row's own timeout, shown while it is not on the global one
        self.global_value: Timeout = None
        self.two_lines = False  # a "needs ~6.0 GB" line under the name
        self._synced = False
        self.widget: QWidget | None = None
        self.name_label: QLabel | None = None
        self.state_label: QLabel | None = None
        self.slider: TimeoutSlider | None = None
        self.use_global: QCheckBox | None = None
        self.countdown_label: QLabel | None = None

    # ---- what it holds -------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        """Its timeout can be set: a valid recipe, or a remote model that is not only routed to."""
        return text.has_usable_recipe(self.snapshot) and not text.is_routed_only(self.snapshot)

    def current(self) -> tuple[bool, Timeout]:
        return (True, None) if self.chose_global else (False, self.own_value)

    @property
    def dirty(self) -> bool:
        return self.current() != self.baseline

    def shown_value(self) -> Timeout:
        return self.global_value if self.chose_global else self.own_value

    def focusable(self, part: int) -> bool:
        """Whether Tab stops at its slider (part 0) or its toggle (part 1)."""
        return self.usable and (part == 1 or not self.chose_global)

    def sync(self, snapshot: text.Snapshot, global_value: Timeout) -> None:
        """Takes the recipe's value, unless the user is editing this row."""
        self.snapshot = snapshot
        self.global_value = global_value
        if not self._synced or not self.dirty or not self.usable:
            self._synced = True
            self.baseline = text.timeout_choice(snapshot)
            self.chose_global, self.own_value = self.baseline
        self.two_lines = bool(text.estimate_text(snapshot))
        self._show()

    def show_global(self, global_value: Timeout) -> None:
        """The global timeout as edited now: the slider shows it while the row follows it."""
        self.global_value = global_value
        if self.slider is not None and self.chose_global:
            self.slider.set_value(global_value)
            self.slider.set_accessible(self._slider_name(), "the global timeout")

    def label_text(self) -> str:
        """The name, and under it what the model needs when loaded."""
        estimate = text.estimate_text(self.snapshot)
        return html.escape(self.name) + (f"<br><small>{html.escape(estimate)}</small>" if estimate else "")

    # ---- its widgets ------------------------------------------------------------------------------

    def build(self, parent: QWidget, columns: Columns) -> QWidget:
        """Makes the row's widgets, showing what it holds."""
        widget = self.widget = QWidget(parent)
        self.name_label = QLabel(self.label_text())
        self.state_label = QLabel()
        self.slider = TimeoutSlider()
        self.slider.setObjectName(f"slider-{self.name}")
        self.use_global = QCheckBox("Use global")
        self.use_global.setObjectName(f"global-{self.name}")
        self.use_global.setAccessibleName(f"Use the global timeout for {self.name}")
        self.countdown_label = QLabel()
        layout = QHBoxLayout(widget)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(COLUMN_SPACING)
        for w in (self.name_label, self.state_label, self.slider, self.use_global, self.countdown_label):
            layout.addWidget(w, 1 if w is self.slider else 0)
        self.set_columns(columns)
        self.slider.edited.connect(self._on_slider)
        self.use_global.toggled.connect(self._on_use_global)
        self._show()
        return widget

    def set_columns(self, columns: Columns) -> None:
        """Widths of the columns beside the slider, the same on every row."""
        if self.widget is None:
            return
        self.name_label.setFixedWidth(columns.name)
        self.state_label.setFixedWidth(columns.state)
        self.use_global.setFixedWidth(columns.toggle)
        self.countdown_label.setFixedWidth(columns.countdown)

    def widget_for(self, part: int) -> QWidget:
        """The built row's slider (part 0) or "Use global" toggle (part 1)."""
        assert self.slider is not None and self.use_global is not None
        return self.slider.slider if part == 0 else self.use_global

    def release(self) -> None:
        """Lets go of the widgets; what the row holds stays."""
        if self.widget is None:
            return
        self.widget.hide()
        self.widget.deleteLater()
        self.widget = self.name_label = self.state_label = self.slider = self.use_global = None
        self.countdown_label = None

    def tick(self, now: float) -> None:
        """The live state and countdown, as of ``now`` (while built)."""
        if self.state_label is None or self.countdown_label is None:
            return
        s = self.snapshot
        self.state_label.setText(text.short_state(s, now))
        countdown = text.countdown_text(s, now)
        if not countdown and s.get("state") == "ready" and s.get("unload_timeout", 0) is None:
            countdown = "kept loaded"
        self.countdown_label.setText(countdown)

    def _slider_name(self) -> str:
        return f"Unload {self.name} when idle for"

    def _show(self) -> None:
        if self.slider is None or self.use_global is None or self.name_label is None or self.state_label is None:
            return
        usable = self.usable
        self.use_global.blockSignals(True)
        self.use_global.setChecked(self.chose_global)
        self.use_global.blockSignals(False)
        self.slider.set_value(self.shown_value())
        self.slider.set_accessible(self._slider_name(), "the global timeout" if self.chose_global else "")
        self.slider.setEnabled(usable and not self.chose_global)
        self.use_global.setEnabled(usable)
        tip = self.snapshot.get("error") if not usable else ""
        self.name_label.setToolTip(tip or str(self.snapshot.get("log_file") or ""))
        label = self.label_text()
        if self.name_label.text() != label:
            self.name_label.setText(label)
        self.state_label.setToolTip(self.snapshot.get("error") or "")

    def _on_slider(self, value: Timeout) -> None:
        self.own_value = value
        self._edited()

    def _on_use_global(self, checked: bool) -> None:
        self.chose_global = checked
        if not checked:  # back to the recipe's own value, or from the global one the slider showed
            self.own_value = self.baseline[1] if self.baseline[0] is False else self.global_value
        self._show()
        self._edited()


class _Canvas(QWidget):
    """Where the recipe rows sit, each placed by hand: no layout, so building or letting go
    of a row costs the others nothing."""

    def __init__(self, changed: Callable[[], None]) -> None:
        super().__init__()
        self._changed = changed

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:  # a row's size hint changed (a font, a style)
            self._changed()
        return super().event(event)

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._changed()


class TimeoutList(QScrollArea):
    """The scrolling list of the "Unload idle models" group: the headings, the global
    timeout's row (the dialog's own slider and field) and a :class:`TimeoutRow` per recipe,
    each built as it scrolls into view."""

    edited = Signal()
    """The user changed a row."""
    resized = Signal()
    """The rows' height changed: the dialog fits the area again."""

    def __init__(self, global_slider: TimeoutSlider, global_edit: QLineEdit, empty_text: str,
                 now: Callable[[], float], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.now = now
        self.global_slider = global_slider
        self.global_edit = global_edit
        self.rows: dict[str, TimeoutRow] = {}
        self.order: list[TimeoutRow] = []
        self.index: dict[str, int] = {}
        self.built: dict[str, TimeoutRow] = {}
        self.columns = Columns()
        self._tops = [0]
        self._heights: dict[bool, int] = {}
        self._name_width = 0
        self._toggle_width = 0
        self._placing = False

        self.headings = [QLabel(t) for t in ("&Model", "State", "Unload when idle for", "", "Unloads in")]
        for heading in self.headings:
            font = heading.font()
            font.setBold(True)
            heading.setFont(font)
        self.headings[0].setBuddy(self)  # Alt+M: to the first row (focusInEvent)
        self.global_label = QLabel("&Global")
        self.global_label.setToolTip("The timeout of every model set to \"Use global\"")
        self.global_label.setBuddy(global_slider.slider)
        self.global_gap = QLabel()
        self.type_label = type_label = QLabel("or &type:")
        type_label.setBuddy(global_edit)
        self.global_tail = QWidget()
        tail = QHBoxLayout(self.global_tail)
        tail.setContentsMargins(0, 0, 0, 0)
        tail.addWidget(type_label)
        tail.addWidget(global_edit, 1)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        self.canvas = _Canvas(self._place)
        self.no_models_label = QLabel(empty_text)
        self.no_models_label.setWordWrap(True)

        self.box = QWidget()
        self.box.setAutoFillBackground(False)
        box_layout = QVBoxLayout(self.box)
        box_layout.setContentsMargins(0, 0, 0, 0)
        box_layout.addLayout(self._line_of(self.headings))
        box_layout.addLayout(self._line_of([self.global_label, self.global_gap, global_slider, self.global_tail]))
        box_layout.addWidget(line)
        box_layout.addWidget(self.canvas)
        box_layout.addWidget(self.no_models_label)
        box_layout.addStretch(1)
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidget(self.box)
        self.viewport().setAutoFillBackground(False)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # not a Tab stop: Tab goes through its rows
        self.setAccessibleName("Idle timeouts")
        self.verticalScrollBar().valueChanged.connect(lambda _v: self._place())
        self._measure_text()
        self._fit_columns()

    @staticmethod
    def _line_of(widgets: list[QWidget]) -> QHBoxLayout:
        line = QHBoxLayout()
        line.setSpacing(COLUMN_SPACING)
        for i, w in enumerate(widgets):
            line.addWidget(w, 1 if i == 2 else 0)
        return line

    # ---- the recipes -------------------------------------------------------------------------

    def set_snapshots(self, snapshots: list[text.Snapshot], global_value: Timeout) -> None:
        """One row per model, in this order; each shows its recipe's value unless the user
        is editing it."""
        names = [s["name"] for s in snapshots]
        if names != list(self.rows):
            old = self.rows
            self.rows = {name: old.get(name) or TimeoutRow(name, self.edited.emit) for name in names}
            for name, row in old.items():
                if name not in self.rows:
                    self.built.pop(name, None)
                    row.release()
            self.order = list(self.rows.values())
            self.index = {name: i for i, name in enumerate(names)}
            self._measure_text()
        for s in snapshots:
            self.rows[s["name"]].sync(s, global_value)
        self.no_models_label.setVisible(not snapshots)
        self._fit_columns()
        self._place()

    def show_global(self, global_value: Timeout) -> None:
        """The global timeout as edited now, shown by the rows that follow it."""
        for row in self.order:
            row.show_global(global_value)

    def tick(self, now: float) -> None:
        """Each built row's state and countdown, as of ``now``."""
        metrics = self.fontMetrics()
        widest = 0
        for row in self.built.values():
            row.tick(now)
            if row.state_label is not None:
                widest = max(widest, metrics.horizontalAdvance(row.state_label.text()) + 4)
        if widest > self.columns.state:  # a long state ("crashed: exit 139 (crash loop)") widens its column
            self.columns.state = widest
            self._apply_columns()

    def built_chain(self) -> list[QWidget]:
        """The built rows' sliders and toggles, in order."""
        rows = sorted(self.built.values(), key=lambda r: self.index[r.name])
        return [w for row in rows for w in (row.widget_for(0), row.widget_for(1))]

    # ---- focus ---------------------------------------------------------------------------------

    def position_of(self, widget: QWidget | None) -> tuple[int, int] | None:
        """``(row, 0)`` for a built row's slider, ``(row, 1)`` for its toggle, else None."""
        for row in self.built.values():
            for part in (0, 1):
                if widget is row.widget_for(part):
                    return self.index[row.name], part
        return None

    def can_focus(self, row: int, part: int) -> bool:
        """Whether Tab stops at row ``row``'s slider (part 0) or toggle (1), built or not."""
        return self.order[row].focusable(part)

    def focus_widget(self, row: int, part: int) -> QWidget:
        """Row ``row``'s slider (part 0) or toggle (1), built now if it was not."""
        if self.order[row].widget is None:
            self._build(row)
        return self.order[row].widget_for(part)

    def reveal(self, widget: QWidget) -> None:
        """Scrolls a row's widget into view (which builds the rows around it)."""
        self.ensureWidgetVisible(widget, 0, BUILD_MARGIN // 2)

    def first_focusable(self) -> QWidget | None:
        """The first row's widget that takes focus (built now), for the "Model" heading's Alt+M."""
        for i, row in enumerate(self.order):
            for part in (0, 1):
                if row.focusable(part):
                    return self.focus_widget(i, part)
        return None

    def focusInEvent(self, event: QFocusEvent) -> None:
        target = self.first_focusable() if event.reason() == Qt.FocusReason.ShortcutFocusReason else None
        if target is not None:  # the "Model" heading's Alt+M
            target.setFocus(Qt.FocusReason.ShortcutFocusReason)
            self.reveal(target)
            return
        super().focusInEvent(event)

    # ---- building what is in view --------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self._measure_text()  # the style and fonts reach the rows only now
        self._fit_columns()
        self._place()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._place()

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.FontChange, QEvent.Type.StyleChange):
            self._measure_text()
            self._fit_columns()

    def _place(self) -> None:
        """Puts each built row at its place, builds the rows in view and lets go of those
        far from it."""
        if self._placing:
            return
        self._placing = True
        try:
            for _ in range(3):  # a row built may measure taller than guessed, which moves the rest
                self._lay_out()
                if not self._build_in_view():
                    break
        finally:
            self._placing = False

    def _lay_out(self) -> None:
        heights = self._row_heights()
        tops = [0]
        for row in self.order:
            tops.append(tops[-1] + heights[row.two_lines] + ROW_SPACING)
        self._tops = tops
        total = max(0, tops[-1] - ROW_SPACING)
        if self.canvas.minimumHeight() != total:
            self.canvas.setFixedHeight(total)
            self.resized.emit()
        for row in self.built.values():
            self._put(row)

    def _row_heights(self) -> dict[bool, int]:
        """The height of a row with one line under its name and with two: measured on a
        built row, guessed until one is built."""
        measured: dict[bool, int] = {}
        for row in self.built.values():
            if row.two_lines not in measured and row.widget is not None:
                measured[row.two_lines] = row.widget.sizeHint().height()
        metrics = self.fontMetrics()
        one = measured.get(False) or self._heights.get(False) or max(metrics.height(), 22)
        two = measured.get(True) or self._heights.get(True) or one + metrics.height()
        self._heights = {False: one, True: max(one, two)}
        return self._heights

    def _view(self) -> tuple[int, int]:
        """The canvas's span in view (before the dialog is shown: the area's top)."""
        if not self.isVisible():
            return 0, MAX_MODELS_AREA
        top = self.verticalScrollBar().value() - self.canvas.y()
        return top, top + self.viewport().height()

    def _build_in_view(self) -> bool:
        """Builds the rows in view and lets go of the far ones; True when it built one."""
        if not self.order:
            return False
        top, bottom = self._view()
        first = max(0, bisect.bisect_right(self._tops, top - BUILD_MARGIN) - 1)
        last = min(len(self.order), bisect.bisect_left(self._tops, bottom + BUILD_MARGIN))
        built = False
        for i in range(first, last):
            if self.order[i].widget is None:
                self._build(i)
                built = True
        focus = self.window().focusWidget()
        for row in list(self.built.values()):
            i = self.index[row.name]
            far = self._tops[i + 1] < top - KEEP_MARGIN or self._tops[i] > bottom + KEEP_MARGIN
            if far and row.widget is not None and not (focus is not None and row.widget.isAncestorOf(focus)):
                del self.built[row.name]
                row.release()
        return built

    def _build(self, i: int) -> None:
        row = self.order[i]
        widget = row.build(self.canvas, self.columns)
        self.built[row.name] = row
        self._put(row)
        widget.show()
        row.tick(self.now())
        before = [r for r in self.built.values() if self.index[r.name] < i]
        previous = max(before, key=lambda r: self.index[r.name]).widget_for(1) if before else self.global_edit
        QWidget.setTabOrder(previous, row.widget_for(0))
        QWidget.setTabOrder(row.widget_for(0), row.widget_for(1))

    def _put(self, row: TimeoutRow) -> None:
        i = self.index[row.name]
        if row.widget is not None:
            height = self._tops[i + 1] - self._tops[i] - ROW_SPACING
            row.widget.setGeometry(0, self._tops[i], self.canvas.width(), height)

    # ---- columns and size ------------------------------------------------------------------------

    def _measure_text(self) -> None:
        """Widths that change only with the names or the font: the longest name, a toggle."""
        self._name_width = max((self.fontMetrics().horizontalAdvance(n) for n in self.rows), default=0)
        probe = QCheckBox("Use global")
        probe.setFont(self.font())
        self._toggle_width = probe.sizeHint().width()
        probe.deleteLater()

    def _fit_columns(self) -> None:
        """Column widths for the names, states and toggles in the list now."""
        metrics = self.fontMetrics()
        bold = QFontMetrics(self.headings[0].font())
        name = max(self._name_width, bold.horizontalAdvance("Model"), self.global_label.sizeHint().width())
        if any(row.two_lines for row in self.order):
            name = max(name, metrics.horizontalAdvance(ESTIMATE_SAMPLE))
        columns = Columns(
            name=name + 4,
            state=max(self.columns.state, bold.horizontalAdvance("State") + 4,
                      *(metrics.horizontalAdvance(s) + 4 for s in STATE_SAMPLES)),
            toggle=self._toggle_width,
            countdown=max(metrics.horizontalAdvance("kept loaded") + 4, bold.horizontalAdvance("Unloads in") + 4))
        edit = self.global_edit
        tail = (self.type_label.sizeHint().width() + self.global_tail.layout().spacing()
                + min(edit.sizeHint().width(), edit.maximumWidth()))
        columns.countdown = max(columns.countdown, tail - columns.toggle - COLUMN_SPACING)
        if columns != self.columns:
            self.columns = columns
            self._apply_columns()

    def _apply_columns(self) -> None:
        c = self.columns
        for heading, width in zip(self.headings, (c.name, c.state, None, c.toggle, c.countdown)):
            if width is not None:
                heading.setFixedWidth(width)
        self.global_label.setFixedWidth(c.name)
        self.global_gap.setFixedWidth(c.state)
        self.global_tail.setFixedWidth(c.toggle + COLUMN_SPACING + c.countdown)
        for row in self.built.values():
            row.set_columns(c)
        slider = self.global_slider.minimumSizeHint().width()
        self.canvas.setMinimumWidth(c.name + c.state + slider + c.toggle + c.countdown + 4 * COLUMN_SPACING)

    def fit(self) -> None:
        """Tall enough for every row up to :data:`MAX_MODELS_AREA`; past it the rows scroll."""
        self.box.layout().invalidate()  # a label's new text is not in the cached size hints yet
        wanted = self.box.sizeHint().height() + 2 * self.frameWidth()
        if self.box.sizeHint().width() > self.viewport().width():  # a horizontal bar takes room too
            wanted += self.horizontalScrollBar().sizeHint().height()
        self.setMinimumHeight(min(wanted, MAX_MODELS_AREA))
