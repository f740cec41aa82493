"""Colours that read well on the user's theme, light or dark.

Widgets never hard-code a colour: an error red that is fine on white (``#b3261e``) is
hard to read on a dark window, and ``palette(mid)`` hint text nearly vanishes on some
themes. Each colour here is chosen against the widget's palette and checked for contrast
(WCAG 2.x relative luminance: 4.5:1 for text, 3:1 for borders and hints), so the same code
gives a dark red on a light theme and a light red on a dark one.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication, QWidget

TEXT_CONTRAST = 4.5
HINT_CONTRAST = 3.0

# (on a light background, on a dark background): Material's error, success and warning tones
_TONES = {
    "error": ("#b3261e", "#f2b8b5"),
    "success": ("#1e7b34", "#81c995"),
    "warning": ("#8a4b00", "#fdd663"),
}


def luminance(colour: QColor) -> float:
    """Relative luminance (WCAG 2.x) of an sRGB colour, 0 (black) to 1 (white)."""

    def channel(value: float) -> float:
        return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4

    return 0.2126 * channel(colour.redF()) + 0.7152 * channel(colour.greenF()) + 0.0722 * channel(colour.blueF())


def contrast(a: QColor, b: QColor) -> float:
    """The contrast ratio of two colours, 1 to 21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _palette(widget: QWidget | None) -> QPalette:
    return widget.palette() if widget is not None else QApplication.palette()


def is_dark(widget: QWidget | None = None) -> bool:
    """True when the window background is darker than its text (a dark theme)."""
    palette = _palette(widget)
    return luminance(palette.color(QPalette.ColorRole.Window)) < luminance(palette.color(QPalette.ColorRole.WindowText))


def tone(name: str, widget: QWidget | None = None) -> QColor:
    """``error``, ``success`` or ``warning``: the variant for this theme, made to reach
    text contrast against the window background if the theme is unusual."""
    light, dark = _TONES[name]
    background = _palette(widget).color(QPalette.ColorRole.Window)
    colour = QColor(dark if is_dark(widget) else light)
    return _towards_contrast(colour, background, TEXT_CONTRAST)


def hint(widget: QWidget | None = None) -> QColor:
    """Secondary text (hints, notes): the theme's placeholder colour, or darker/lighter
    until it reaches 3:1 against the window background."""
    palette = _palette(widget)
    background = palette.color(QPalette.ColorRole.Window)
    return _towards_contrast(_over(palette.color(QPalette.ColorRole.PlaceholderText), background), background,
                             HINT_CONTRAST)


def banner_background(widget: QWidget | None = None) -> QColor:
    """A notice's background: a warm tint of the window colour (light or dark)."""
    base = _palette(widget).color(QPalette.ColorRole.Window)
    tint = QColor("#fdd663")
    weight = 0.35 if is_dark(widget) else 0.3
    return QColor.fromRgbF(base.redF() * (1 - weight) + tint.redF() * weight,
                           base.greenF() * (1 - weight) + tint.greenF() * weight,
                           base.blueF() * (1 - weight) + tint.blueF() * weight)


def text_style(name: str, widget: QWidget | None = None) -> str:
    """A style sheet for a label in ``error``, ``success``, ``warning`` or ``hint`` colour."""
    colour = hint(widget) if name == "hint" else tone(name, widget)
    return f"color: {colour.name()}"


def error_border_style(widget: QWidget | None = None) -> str:
    """A style sheet that outlines a field whose value is refused."""
    return f"border: 1px solid {tone('error', widget).name()};"


def _over(colour: QColor, background: QColor) -> QColor:
    """A translucent colour (themes often make placeholder text half-transparent) as it
    shows on ``background``."""
    a = colour.alphaF()
    return QColor.fromRgbF(colour.redF() * a + background.redF() * (1 - a),
                           colour.greenF() * a + background.greenF() * (1 - a),
                           colour.blueF() * a + background.blueF() * (1 - a))


def _towards_contrast(colour: QColor, background: QColor, target: float) -> QColor:
    """``colour``, moved step by step towards black or white (away from the background)
    until it reaches ``target`` contrast against ``background``."""
    goal = QColor("black") if luminance(background) > 0.5 else QColor("white")
    current = QColor(colour)
    for step in range(1, 11):
        if contrast(current, background) >= target:
            return current
        weight = step / 10
        current = QColor.fromRgbF(colour.redF() * (1 - weight) + goal.redF() * weight,
                                  colour.greenF() * (1 - weight) + goal.greenF() * weight,
                                  colour.blueF() * (1 - weight) + goal.blueF() * weight)
    return current
