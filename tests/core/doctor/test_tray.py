"""The doctor's tray probe, against a real X server (Xvfb) and a real session bus
(``dbus-daemon``), never starting Qt: nobody owns ``_NET_SYSTEM_TRAY_S0`` until the test takes
the selection itself through libX11, as an XEmbed tray does; nobody owns
``org.kde.StatusNotifierWatcher`` until the test's panel (tests/ui/tray/sni_host.py) takes
it, with a host or without one. Skipped without Xvfb or dbus-daemon, failed under CI."""

from __future__ import annotations

import asyncio
import ctypes
from pathlib import Path
from typing import Any

from app.core.doctor.tray import tray_items
from app.core.doctor.tray_unix import _libx11, session_bus_address
from tests.desktop import bus, display  # noqa: F401 - fixtures
from tests.ui.tray.sni_host import TrayHost


class XTrayOwner:
    """An XEmbed tray as far as the probe can tell: a window that owns _NET_SYSTEM_TRAY_S0."""

    def __init__(self, display: str) -> None:
        self.lib = lib = _libx11()
        lib.XRootWindow.restype = ctypes.c_ulong
        lib.XRootWindow.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.XCreateSimpleWindow.restype = ctypes.c_ulong
        lib.XCreateSimpleWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_int] * 2 + \
            [ctypes.c_uint] * 3 + [ctypes.c_ulong] * 2
        lib.XSetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
        self.dpy = lib.XOpenDisplay(display.encode())
        assert self.dpy
        root = lib.XRootWindow(self.dpy, 0)
        self.window = lib.XCreateSimpleWindow(self.dpy, root, 0, 0, 1, 1, 0, 0, 0)
        atom = lib.XInternAtom(self.dpy, b"_NET_SYSTEM_TRAY_S0", 0)
        lib.XSetSelectionOwner(self.dpy, atom, self.window, 0)  # CurrentTime
        lib.XSync(self.dpy, 0)  # the server has it before the probe asks

    def close(self) -> None:
        self.lib.XCloseDisplay(self.dpy)


def items(environ: dict[str, str], platform: str = "linux") -> dict[str, Any]:
    return {item.key: item for item in tray_items(environ, platform)}


def test_windows_and_macos_always_have_one() -> None:
    assert items({}, "win32")["tray"].shown() == "yes: the notification area (Windows always has one)"
    assert items({}, "darwin")["tray"].shown() == "yes: the menu bar (macOS always has one)"


def test_no_display_and_no_bus_means_no_tray() -> None:
    found = items({})
    assert found["xembed"].missing == "$DISPLAY is not set (no X11 display)"
    assert found["status_notifier"].missing.startswith("no session bus: $DBUS_SESSION_BUS_ADDRESS is not set")
    assert found["tray"].value is None
    assert found["tray"].shown() == ("none (no StatusNotifierWatcher with a host and no XEmbed tray): the app opens "
                                     "its Models window instead")


def test_an_offscreen_qt_has_no_tray() -> None:
    item = items({"QT_QPA_PLATFORM": "offscreen"})["tray"]
    assert item.value is None and item.shown().startswith("none: QT_QPA_PLATFORM=offscreen has no tray")


def test_a_display_that_cannot_be_opened() -> None:
    item = items({"DISPLAY": ":4242"})["xembed"]  # no such server
    assert not item.found and item.missing == ":4242: cannot open display :4242"


def test_xembed_tray_on_x11(display: str) -> None:
    before = items({"DISPLAY": display, "XDG_SESSION_TYPE": "x11"})
    assert before["xembed"].shown() == "no: nobody owns _NET_SYSTEM_TRAY_S0"
    assert before["xembed"].source == f"XGetSelectionOwner(_NET_SYSTEM_TRAY_S0) on DISPLAY={display}"
    assert before["tray"].value is None
    tray = XTrayOwner(display)
    try:
        after = items({"DISPLAY": display, "XDG_SESSION_TYPE": "x11"})
    finally:
        tray.close()
    assert after["xembed"].value["owner"] == tray.window
    assert after["xembed"].shown() == f"yes: window {tray.window:#x} owns _NET_SYSTEM_TRAY_S0"
    assert after["tray"].shown() == "yes: XEmbed (X11)"
    assert after["session"].value["XDG_SESSION_TYPE"] == "x11"
    # on Wayland Qt has no XEmbed tray, even with an X server beside it (XWayland)
    tray = XTrayOwner(display)
    try:
        wayland = items({"DISPLAY": display, "WAYLAND_DISPLAY": "wayland-0"})
    finally:
        tray.close()
    assert wayland["xembed"].found and wayland["tray"].value is None


async def test_status_notifier_watcher_on_the_session_bus(bus: str) -> None:
    env = {"DBUS_SESSION_BUS_ADDRESS": bus}
    before = await asyncio.to_thread(items, env)
    assert before["status_notifier"].shown() == "no: nobody owns org.kde.StatusNotifierWatcher on the session bus"
    async with TrayHost.running(bus):
        after = await asyncio.to_thread(items, env)
    watcher = after["status_notifier"]
    assert watcher.value["host"] is True
    assert watcher.shown().startswith("yes: :1.") and watcher.shown().endswith(
        "owns org.kde.StatusNotifierWatcher, with a host registered")
    assert watcher.source == ("GetNameOwner(org.kde.StatusNotifierWatcher) on the session bus "
                              "($DBUS_SESSION_BUS_ADDRESS), IsStatusNotifierHostRegistered")
    assert after["tray"].shown() == "yes: StatusNotifierItem (D-Bus)"


class WatcherWithoutHost(TrayHost):
    def _properties(self) -> dict[str, tuple[str, Any]]:
        return {**super()._properties(), "IsStatusNotifierHostRegistered": ("b", False)}


async def test_a_watcher_without_a_host_is_no_tray_for_qt(bus: str, tmp_path: Path) -> None:
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    socket = bus.split("path=", 1)[1].split(",", 1)[0]
    (runtime / "bus").symlink_to(socket)  # found the way libdbus does without the variable
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    assert session_bus_address(env) == (f"unix:path={runtime / 'bus'}", "$XDG_RUNTIME_DIR/bus")
    async with WatcherWithoutHost.running(bus):
        found = await asyncio.to_thread(items, env)
    assert found["status_notifier"].value["host"] is False
    assert found["status_notifier"].shown().endswith("but no host registered (Qt then uses no D-Bus tray)")
    assert found["tray"].value is None
