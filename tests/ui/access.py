"""Helpers for the keyboard, screen-reader and dark-theme tests of the dialogs: real key
events (Tab, Alt+letter), Qt's accessibility interface, and a dark palette."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAccessible, QColor, QKeySequence, QPalette
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractButton, QApplication, QGroupBox, QLabel, QWidget

from tests.ui.helpers import until

# A dark theme on which the old hard-coded colours are hard to read: the red #b3261e and
# the green #1e7b34 reach less than 3:1 on its window colour, palette(mid) and its
# placeholder text less than 2:1.
DARK = {
    QPalette.ColorRole.Window: "#2a2e32", QPalette.ColorRole.WindowText: "#fcfcfc",
    QPalette.ColorRole.Base: "#1b1e20", QPalette.ColorRole.AlternateBase: "#232629",
    QPalette.ColorRole.Text: "#fcfcfc", QPalette.ColorRole.Button: "#31363b",
    QPalette.ColorRole.ButtonText: "#fcfcfc", QPalette.ColorRole.Highlight: "#3daee9",
    QPalette.ColorRole.HighlightedText: "#fcfcfc", QPalette.ColorRole.Mid: "#3b4045",
    QPalette.ColorRole.Dark: "#1b1e20", QPalette.ColorRole.Light: "#40464c",
    QPalette.ColorRole.PlaceholderText: "#4d5257", QPalette.ColorRole.ToolTipBase: "#31363b",
    QPalette.ColorRole.ToolTipText: "#fcfcfc",
}


def dark_palette() -> QPalette:
    palette = QPalette()
    for role, colour in DARK.items():
        palette.setColor(role, QColor(colour))
    return palette


@pytest.fixture
def dark_theme(qapp) -> Iterator[QPalette]:
    """The application in a dark palette for one test."""
    before = QPalette(qapp.palette())
    palette = dark_palette()
    qapp.setPalette(palette)
    try:
        yield palette
    finally:
        qapp.setPalette(before)


def _luminance(colour: QColor) -> float:
    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())


def contrast(a: QColor, b: QColor) -> float:
    """WCAG 2.x contrast ratio of two opaque colours (1 to 21)."""
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def shown_colour(colour: QColor, background: QColor) -> QColor:
    """A colour as it shows on ``background`` (its alpha blended in)."""
    a = colour.alphaF()
    return QColor.fromRgbF(colour.redF() * a + background.redF() * (1 - a),
                           colour.greenF() * a + background.greenF() * (1 - a),
                           colour.blueF() * a + background.blueF() * (1 - a))


def text_contrast(label: QWidget, window: QWidget | None = None) -> float:
    """The contrast of a label's text colour (style sheet included) with its window's background."""
    label.ensurePolished()
    background = (window or label.window()).palette().color(QPalette.ColorRole.Window)
    text = label.palette().color(QPalette.ColorRole.WindowText)
    return contrast(shown_colour(text, background), background)


def accessible(widget: QWidget, what: QAccessible.Text = QAccessible.Text.Name) -> str:
    """What Qt tells a screen reader about ``widget``: its name (or description, value)."""
    interface = QAccessible.queryAccessibleInterface(widget)
    assert interface is not None and interface.isValid(), widget
    return interface.text(what)


def labelled_by(widget: QWidget) -> list[str]:
    """The names of the labels Qt tells a screen reader ``widget`` is labelled by (a
    combo box's name on Linux is its current value: its label comes through this relation)."""
    interface = QAccessible.queryAccessibleInterface(widget)
    return [other.text(QAccessible.Text.Name) for other, _ in interface.relations(QAccessible.RelationFlag.Label)]


def activate(loop, window: QWidget) -> None:
    """Shows ``window`` and waits, on the test's qasync loop (a nested Qt loop would run the
    dialog's tasks outside it), until it is the active window: key events reach it."""
    window.show()
    window.activateWindow()
    loop.run_until_complete(until(lambda: QApplication.activeWindow() is window, 5, "the window to be active"))


def tab_walk(start: QWidget, steps: int, *, back: bool = False) -> list[QWidget]:
    """Puts the focus on ``start`` and presses Tab (Shift+Tab with ``back``) ``steps``
    times; returns where the focus was after each press, ``start`` first."""
    start.setFocus(Qt.FocusReason.TabFocusReason)
    seen = [QApplication.focusWidget()]
    assert seen[0] is start, f"{start.objectName()} cannot take the focus"
    for _ in range(steps):
        if back:
            QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Backtab, Qt.KeyboardModifier.ShiftModifier)
        else:
            QTest.keyClick(QApplication.focusWidget(), Qt.Key.Key_Tab)
        seen.append(QApplication.focusWidget())
    return seen


def names(widgets: Iterable[QWidget | None]) -> list[str]:
    return [w.objectName() or type(w).__name__ if w is not None else "None" for w in widgets]


def mnemonic(text: str) -> str:
    """The letter of ``&X`` in a label or button text, "" when it has none."""
    sequence = QKeySequence.mnemonic(text).toString()
    return sequence.removeprefix("Alt+").upper() if sequence else ""


def mnemonics(window: QWidget) -> dict[str, list[QWidget]]:
    """Every Alt+letter of the widgets ``window`` shows, and what each letter reaches: a
    button itself, a label's buddy, a group box."""
    found: dict[str, list[QWidget]] = {}
    for widget in window.findChildren(QWidget):
        if not widget.isVisibleTo(window):
            continue
        if isinstance(widget, QAbstractButton):
            text, target = widget.text(), widget
        elif isinstance(widget, QLabel) and widget.buddy() is not None:
            text, target = widget.text(), widget.buddy()
        elif isinstance(widget, QGroupBox):
            text, target = widget.title(), widget
        else:
            continue
        letter = mnemonic(text)
        if letter:
            found.setdefault(letter, []).append(target)
    return found


def assert_mnemonics(window: QWidget, fields: list[QWidget], buttons: list[QWidget]) -> dict[str, QWidget]:
    """Each shown letter is unique in ``window``, every field is reached by one (through a
    label) and every button has one; Alt+letter focuses each field. Returns letter → widget."""
    found = mnemonics(window)
    twice = {letter: names(targets) for letter, targets in found.items() if len(targets) > 1}
    assert not twice, f"mnemonics used twice: {twice}"
    by_widget = {targets[0]: letter for letter, targets in found.items()}
    missing = [w for w in fields + buttons if w not in by_widget]
    assert not missing, f"no mnemonic: {names(missing)}"
    for field in fields:
        press_alt(window, by_widget[field])
        assert QApplication.focusWidget() is field, (by_widget[field], names([QApplication.focusWidget()]))
    return {letter: targets[0] for letter, targets in found.items()}


def press_alt(window: QWidget, letter: str) -> None:
    QTest.keyClick(window, Qt.Key(ord(letter.upper())), Qt.KeyboardModifier.AltModifier)


@pytest.fixture
def announcements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the dialogs ask screen readers to announce (QAccessibleAnnouncementEvent),
    recorded as it is sent; every other accessibility event goes on to Qt."""
    said: list[str] = []
    update = QAccessible.updateAccessibility

    def record(event) -> None:  # noqa: ANN001 - a QAccessibleEvent
        if event.type() == QAccessible.Event.Announcement:
            said.append(event.message())
        else:
            update(event)

    monkeypatch.setattr(QAccessible, "updateAccessibility", staticmethod(record))
    return said
