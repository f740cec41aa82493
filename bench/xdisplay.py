"""A real X display for the tray app's figures: Xvfb, optionally with trayer as its system tray.

``scripts/screenshots.sh`` runs the desktop app this way; the benchmark does the same so
that the tray app is measured as a user runs it (its icon docked in a tray host, its menu
closed), not on Qt's ``offscreen`` platform, where there is no tray and the Models window
stays open. Without trayer the display has no tray, as on a desktop without one, and the
app opens its Models window instead.

What the benchmark asks of the display goes through libX11 with ctypes (no python-xlib
needed): whether an icon is docked in trayer's panel (trayer reparents the icon's window
into a socket window of its panel, then maps it) and whether a top-level window of a given
title is mapped. One query is one round trip to Xvfb, cheap enough to poll every 5 ms.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import subprocess
import time
from pathlib import Path

from .util import PROCS, spawn

_Window = ctypes.c_ulong


class _XWindowAttributes(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("width", ctypes.c_int), ("height", ctypes.c_int),
                ("border_width", ctypes.c_int), ("depth", ctypes.c_int), ("visual", ctypes.c_void_p),
                ("root", _Window), ("class_", ctypes.c_int), ("bit_gravity", ctypes.c_int),
                ("win_gravity", ctypes.c_int), ("backing_store", ctypes.c_int), ("backing_planes", ctypes.c_ulong),
                ("backing_pixel", ctypes.c_ulong), ("save_under", ctypes.c_int), ("colormap", ctypes.c_ulong),
                ("map_installed", ctypes.c_int), ("map_state", ctypes.c_int), ("all_event_masks", ctypes.c_long),
                ("your_event_mask", ctypes.c_long), ("do_not_propagate_mask", ctypes.c_long),
                ("override_redirect", ctypes.c_int), ("screen", ctypes.c_void_p)]


IS_VIEWABLE = 2


class XClient:
    """A connection to one X display, with the few queries the benchmark needs."""

    def __init__(self, display: str) -> None:
        name = ctypes.util.find_library("X11") or "libX11.so.6"
        self.lib = lib = ctypes.CDLL(name)
        lib.XOpenDisplay.restype = ctypes.c_void_p
        lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        lib.XDefaultRootWindow.restype = _Window
        lib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        lib.XQueryTree.argtypes = [ctypes.c_void_p, _Window, ctypes.POINTER(_Window), ctypes.POINTER(_Window),
                                   ctypes.POINTER(ctypes.POINTER(_Window)), ctypes.POINTER(ctypes.c_uint)]
        lib.XFetchName.argtypes = [ctypes.c_void_p, _Window, ctypes.POINTER(ctypes.c_char_p)]
        lib.XGetWindowAttributes.argtypes = [ctypes.c_void_p, _Window, ctypes.POINTER(_XWindowAttributes)]
        lib.XFree.argtypes = [ctypes.c_void_p]
        lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        lib.XInternAtom.restype = ctypes.c_ulong
        lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.XGetWindowProperty.argtypes = [
            ctypes.c_void_p, _Window, ctypes.c_ulong, ctypes.c_long, ctypes.c_long, ctypes.c_int, ctypes.c_ulong,
            ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_ulong),
            ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_void_p)]
        self.dpy = lib.XOpenDisplay(display.encode())
        if not self.dpy:
            raise OSError(f"cannot open X display {display}")
        self.root = lib.XDefaultRootWindow(self.dpy)
        self.net_wm_name = lib.XInternAtom(self.dpy, b"_NET_WM_NAME", 0)

    def close(self) -> None:
        if self.dpy:
            self.lib.XCloseDisplay(self.dpy)
            self.dpy = None

    def children(self, window: int) -> list[int]:
        root, parent = _Window(), _Window()
        kids = ctypes.POINTER(_Window)()
        count = ctypes.c_uint()
        if not self.lib.XQueryTree(self.dpy, window, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(kids),
                                   ctypes.byref(count)):
            return []
        try:
            return [kids[i] for i in range(count.value)]
        finally:
            if kids:
                self.lib.XFree(kids)

    def name(self, window: int) -> str | None:
        """The window's ``_NET_WM_NAME`` (UTF-8, as Qt sets it), else its ``WM_NAME``."""
        kind, fmt, count, after = ctypes.c_ulong(), ctypes.c_int(), ctypes.c_ulong(), ctypes.c_ulong()
        data = ctypes.c_void_p()
        if self.lib.XGetWindowProperty(self.dpy, window, self.net_wm_name, 0, 1024, 0, 0, ctypes.byref(kind),
                                       ctypes.byref(fmt), ctypes.byref(count), ctypes.byref(after),
                                       ctypes.byref(data)) == 0 and data.value:
            try:
                if fmt.value == 8 and count.value:
                    return ctypes.string_at(data.value, count.value).decode(errors="replace")
            finally:
                self.lib.XFree(data)
        out = ctypes.c_char_p()
        if not self.lib.XFetchName(self.dpy, window, ctypes.byref(out)) or not out.value:
            return None
        try:
            return out.value.decode(errors="replace")
        finally:
            self.lib.XFree(out)

    def viewable(self, window: int) -> bool:
        attrs = _XWindowAttributes()
        if not self.lib.XGetWindowAttributes(self.dpy, window, ctypes.byref(attrs)):
            return False
        return attrs.map_state == IS_VIEWABLE

    def find(self, name: str, start: int | None = None, depth: int = 3) -> int | None:
        """A window whose name is ``name`` (or starts with it), searched ``depth`` levels deep."""
        level = [self.root if start is None else start]
        for _ in range(depth):
            nxt = []
            for window in level:
                for child in self.children(window):
                    title = self.name(child)
                    if title is not None and title.startswith(name):
                        return child
                    nxt.append(child)
            level = nxt
        return None

    def docked_icons(self, panel: int) -> list[int]:
        """The client windows docked in trayer's ``panel`` and mapped: each is a child of a
        socket window, itself a child of the panel."""
        return [icon for socket in self.children(panel) for icon in self.children(socket) if self.viewable(icon)]

    def window_shown(self, title: str) -> bool:
        """Whether a top-level window titled ``title`` (a prefix) is mapped and viewable."""
        window = self.find(title, depth=2)
        return window is not None and self.viewable(window)


class XServer:
    """Xvfb on a free display number (``-displayfd``), and trayer on it when ``tray``."""

    def __init__(self, home: Path, *, tray: bool) -> None:
        self.home = home
        self.tray = tray
        self.display = ""
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client: XClient | None = None
        self.panel: int | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a Qt program needs to run on this display."""
        return {"DISPLAY": self.display, "QT_QPA_PLATFORM": "xcb"}

    def start(self, timeout: float = 20.0) -> "XServer":
        self.home.mkdir(parents=True, exist_ok=True)
        read_fd, write_fd = os.pipe()
        try:
            with (self.home / "xvfb.log").open("ab") as log:
                xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x800x24",
                                         "-nolisten", "tcp"], stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, pass_fds=(write_fd,), start_new_session=True)
            self.procs.append(PROCS.add(xvfb))
            os.close(write_fd)
            write_fd = -1
            got = b""
            deadline = time.monotonic() + timeout
            while not got.endswith(b"\n"):  # read up to the newline: Xvfb dies if the pipe closes before
                ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
                chunk = os.read(read_fd, 64) if ready else b""
                if not chunk:
                    break
                got += chunk
            number = got.decode().strip()
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        if not number:
            self.stop()
            raise RuntimeError("Xvfb did not report a display number; see " + str(self.home / "xvfb.log"))
        self.display = f":{number}"
        deadline = time.monotonic() + timeout
        while self.client is None:  # the number comes as the server starts listening
            try:
                self.client = XClient(self.display)
            except OSError:
                if time.monotonic() > deadline or xvfb.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"cannot open Xvfb's display {self.display}; see {self.home / 'xvfb.log'}")
                time.sleep(0.02)
        if self.tray:
            trayer = spawn(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "30",
                            "--SetDockType", "true"], log=self.home / "trayer.log", env=os.environ | self.env)
            self.procs.append(trayer)
            deadline = time.monotonic() + timeout
            while self.panel is None:
                self.panel = self.client.find("panel", depth=1)
                if self.panel is None:
                    if time.monotonic() > deadline or trayer.poll() is not None:
                        self.stop()
                        raise RuntimeError("trayer's panel did not appear; see " + str(self.home / "trayer.log"))
                    time.sleep(0.02)
        return self

    def icons(self) -> list[int]:
        assert self.client is not None and self.panel is not None
        return self.client.docked_icons(self.panel)

    def wait_no_icons(self, timeout: float = 10.0) -> None:
        """Waits until the tray holds no icon (the previous app's has gone)."""
        deadline = time.monotonic() + timeout
        while self.icons():
            if time.monotonic() > deadline:
                raise RuntimeError("an icon stayed docked in the tray after its app quit")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        for proc in reversed(self.procs):
            PROCS.stop(proc)
        self.procs.clear()

    def __enter__(self) -> "XServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
