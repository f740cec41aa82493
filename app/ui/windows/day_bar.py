"""The Models window's "Today" column: each model's day so far as a thin bar under its words
(``"3×, 42% in memory"``), drawn by :class:`DayBarDelegate`.

The bar runs the width of the cell: the share of the day the model was in memory and busy
in the theme's highlight colour, then its share idle in memory in a faded highlight, and the
rest (not loaded) as the theme's mid colour, faint. The shares are the item's
:data:`SHARES_ROLE` data, ``(busy, idle)`` (:func:`app.ui.history_text.day_shares`); an item
without them has no bar. The words and the tooltip say the same for screen readers.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QRectF, Qt
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QStyledItemDelegate, QStyleOptionViewItem

SHARES_ROLE = Qt.ItemDataRole.UserRole + 1
BAR_HEIGHT = 3
MARGIN = 4


class DayBarDelegate(QStyledItemDelegate):
    """Paints the cell as usual and the day's bar along its bottom, under the text."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem,
              index: QModelIndex | QPersistentModelIndex) -> None:
        shares = index.data(SHARES_ROLE)
        if not shares:
            super().paint(painter, option, index)
            return
        super().paint(painter, option, index)
        busy, idle = (max(0.0, min(1.0, float(share))) for share in shares)
        rect = QRectF(option.rect.left() + MARGIN, option.rect.bottom() - BAR_HEIGHT - 1,
                      max(0, option.rect.width() - 2 * MARGIN), BAR_HEIGHT)
        palette = option.palette
        highlight = palette.highlight().color()
        faded = QColor(highlight)
        faded.setAlphaF(0.4)
        rest = QColor(palette.mid().color())
        rest.setAlphaF(0.35)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        painter.fillRect(rect, rest)
        busy_width = rect.width() * busy
        idle_width = rect.width() * min(idle, 1.0 - busy)
        painter.fillRect(QRectF(rect.left(), rect.top(), busy_width, rect.height()), highlight)
        painter.fillRect(QRectF(rect.left() + busy_width, rect.top(), idle_width, rect.height()), faded)
        painter.restore()
