"""Whether the tray menu is open: :class:`MenuWatch`, for what runs only while it is (the
countdowns' once-a-second tick).

Trays show the menu in one of two ways:

* Qt pops the ``QMenu`` up itself (XEmbed trays on X11, Windows, macOS, and a left click
  on any tray): ``aboutToShow`` and ``aboutToHide`` frame it, and ``isVisible()`` is true
  in between.
* A StatusNotifierItem host draws it (KDE Plasma, GNOME with the AppIndicator extension,
  most Wayland panels; Qt uses it on xcb and wayland whenever an
  ``org.kde.StatusNotifierWatcher`` with a host is on the session bus). Qt exports the
  menu over D-Bus (``com.canonical.dbusmenu``) and the ``QMenu`` widget is never shown:
  ``isVisible()`` stays false. The host's ``AboutToShow`` call arrives as the menu's (or a
  submenu's) ``aboutToShow``, its ``closed`` event as ``aboutToHide``; Qt drops the
  ``opened`` event. Some hosts never send ``closed``, and some call ``AboutToShow`` without
  showing anything (to read the layout ahead), so ``aboutToHide`` may never come.

So the watch says "closed" on ``aboutToHide`` and, while the widget is not shown,
:data:`UNSEEN_LIMIT_S` after the last sign of the menu being open: its ``aboutToShow``, a
submenu's ``aboutToShow``, an entry hovered. After a host that never says "closed" has
closed the menu, the countdowns tick for at most that long; someone who keeps such a menu
open longer without touching it sees them stop, and they start again when it next opens.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QMenu

log = logging.getLogger(__name__)

UNSEEN_LIMIT_S = 60.0
_WATCHED = "siesta-menu-watched"  # a dynamic property: this submenu's signals are connected


class MenuWatch(QObject):
    """Emits ``opened`` each time ``menu`` is about to show and ``closed`` once it is
    taken to be closed (see the module's docstring)."""

    opened = Signal()
    closed = Signal()

    def __init__(self, menu: QMenu, parent: QObject | None = None, *, unseen_limit: float | None = None) -> None:
        """``unseen_limit``: seconds without a sign of an exported menu before it counts
        as closed (default :data:`UNSEEN_LIMIT_S`, read when the watch is made)."""
        super().__init__(parent)
        self.menu = menu
        self.is_open = False
        self._deadline = QTimer(self)
        self._deadline.setSingleShot(True)
        self._deadline.setInterval(round((UNSEEN_LIMIT_S if unseen_limit is None else unseen_limit) * 1000))
        self._deadline.timeout.connect(self._on_deadline)
        menu.aboutToShow.connect(self._on_about_to_show)
        menu.aboutToHide.connect(self._on_about_to_hide)
        menu.hovered.connect(self._on_sign)

    def _on_about_to_show(self) -> None:
        self.is_open = True
        self._watch_submenus()
        self._deadline.start()
        self.opened.emit()

    def _on_about_to_hide(self) -> None:
        self._deadline.stop()
        if self.is_open:
            self.is_open = False
            self.closed.emit()

    def _on_sign(self, *_args: object) -> None:
        """A submenu opened or an entry was hovered: the menu is open."""
        self._watch_submenus()
        if self.is_open:
            self._deadline.start()
        else:  # the limit had passed, but the menu was open after all
            self._on_about_to_show()

    def _watch_submenus(self) -> None:
        pending = [self.menu]
        while pending:
            for action in pending.pop().actions():
                submenu = action.menu()
                if not isinstance(submenu, QMenu):
                    continue
                if not submenu.property(_WATCHED):
                    submenu.setProperty(_WATCHED, True)
                    submenu.aboutToShow.connect(self._on_sign)
                    submenu.hovered.connect(self._on_sign)
                pending.append(submenu)

    def _on_deadline(self) -> None:
        if not self.is_open:
            return
        if self.menu.isVisible():  # shown as a widget: aboutToHide will come
            self._deadline.start()
            return
        log.info("no sign of the tray menu for %.0f s and the tray never said it closed: "
                 "countdowns stop until it opens again", self._deadline.interval() / 1000)
        self.is_open = False
        self.closed.emit()
