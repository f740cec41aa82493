"""The real tray app for tests/ui/tray/test_tray_sni.py: ``python sni_app.py SECONDS ARGS...`` runs
``siesta ARGS...`` with the tray menu watch's limit for a menu no host says is closed
(``app.ui.tray.menu_watch.UNSEEN_LIMIT_S``, a minute) turned down to SECONDS."""

from __future__ import annotations

import sys

from app.cli import main
from app.ui.tray import menu_watch

if __name__ == "__main__":
    menu_watch.UNSEEN_LIMIT_S = float(sys.argv[1])
    raise SystemExit(main(sys.argv[2:]))
