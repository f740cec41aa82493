"""Keyboard and screen-reader helpers the dialogs share.

A label's text is what a screen reader reads for it, and Qt tells the reader when it
changes, unless the label has an accessible name of its own (then the name hides the
text). :class:`StatusLabel` is for changing text that needs such a name ("Try it
status"): the name says what it is, the accessible description is the current text.
:func:`announce` asks the screen reader to say an outcome (a download done, an error)
wherever the focus is. :func:`set_tab_order` makes Tab follow the order the widgets are
seen in, whatever order they were built in.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtGui import QAccessible, QAccessibleAnnouncementEvent, Qt, QTextDocumentFragment
from PySide6.QtWidgets import QLabel, QWidget

from app.ui import theme


def plain_text(text: str) -> str:
    """A label's text as a screen reader should get it: rich text (``<b>``, ``<br>``) as plain text."""
    if Qt.mightBeRichText(text):
        return QTextDocumentFragment.fromHtml(text).toPlainText()
    return text


def announce(source: QObject, message: str, *, assertive: bool = False) -> None:
    """Asks screen readers to say ``message`` now (polite: after what they are saying;
    assertive: at once, for errors that stop what the user was doing)."""
    event = QAccessibleAnnouncementEvent(source, plain_text(message))
    if assertive:
        event.setPoliteness(QAccessible.AnnouncementPoliteness.Assertive)
    QAccessible.updateAccessibility(event)


def describe(widget: QWidget, text: str) -> None:
    """Keeps ``widget``'s accessible description at ``text`` (Qt tells screen readers of the change)."""
    text = plain_text(text)
    if widget.accessibleDescription() != text:
        widget.setAccessibleDescription(text)


def set_tab_order(widgets: list[QWidget]) -> None:
    """Tab goes through ``widgets`` in this order (the order they are seen in)."""
    for first, second in zip(widgets, widgets[1:]):
        QWidget.setTabOrder(first, second)


class StatusLabel(QLabel):
    """A label whose text changes (what is going on, an outcome): its accessible name says
    what it is and stays; its accessible description is always the current text; its colour
    is one of :mod:`theme`'s tones (or the theme's own text colour)."""

    def __init__(self, accessible_name: str, object_name: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAccessibleName(accessible_name)
        if object_name:
            self.setObjectName(object_name)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setText(text)
        describe(self, text)

    def set_tone(self, tone: str | None) -> None:
        """``error``, ``success``, ``warning``, ``hint``, or None for the theme's text colour."""
        self.setStyleSheet(theme.text_style(tone, self) if tone else "")
