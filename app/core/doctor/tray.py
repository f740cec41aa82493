"""Whether a system tray is there, and which kind: probed without starting the tray or Qt.

On Linux and the BSDs the desktop decides (:mod:`.tray_unix`: XEmbed on X11, or a
StatusNotifierWatcher on the session bus). Windows always has its notification area and
macOS its menu bar, so there it is said, not probed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

from app.core.doctor.report import Item, found

__all__ = ["tray_items"]


def tray_items(environ: Mapping[str, str] | None = None, platform: str | None = None) -> Iterable[Item]:
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        yield found("tray", "Qt would use", "notification area", f"sys.platform {platform}",
                    text="yes: the notification area (Windows always has one)")
    elif platform == "darwin":
        yield found("tray", "Qt would use", "menu bar", f"sys.platform {platform}",
                    text="yes: the menu bar (macOS always has one)")
    else:
        from app.core.doctor import tray_unix

        yield from tray_unix.tray_items(environ)
