"""The floor of the tray app's start-up and memory: a bare PySide6 program, nothing of Siesta.

    python -m bench.qt_floor tray      # a tray icon, shown
    python -m bench.qt_floor window    # a 760 x 320 window titled "bench floor", shown

It imports PySide6 only (not the benchmark, not the app), so the time from its launch to
its icon docked or its window shown is what Python and Qt alone take on the same display.
It runs until it is signalled.
"""

import sys

from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import QApplication, QSystemTrayIcon, QWidget

WINDOW_TITLE = "bench floor"


def main() -> int:
    app = QApplication(sys.argv[:1])
    keep = []
    if sys.argv[1:] == ["tray"]:
        pixmap = QPixmap(22, 22)
        pixmap.fill(QColor("#4a7fb5"))
        icon = QSystemTrayIcon(QIcon(pixmap))
        icon.show()
        keep.append(icon)
    elif sys.argv[1:] == ["window"]:
        window = QWidget()
        window.setWindowTitle(WINDOW_TITLE)
        window.resize(760, 320)
        window.show()
        keep.append(window)
    else:
        print("usage: python -m bench.qt_floor tray|window", file=sys.stderr)
        return 2
    return app.exec()


if __name__ == "__main__":
    raise SystemExit(main())
