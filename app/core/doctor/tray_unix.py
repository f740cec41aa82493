"""Whether a system tray is there on Linux and the BSDs, and which kind, asked the way Qt asks,
without starting the tray or Qt:

* **XEmbed** (X11): a tray owns the X selection ``_NET_SYSTEM_TRAY_S<screen>`` on ``$DISPLAY``.
  Asked through libX11 with ctypes (``XOpenDisplay``, ``XInternAtom`` with only-if-exists, so
  nothing is created on the server, ``XGetSelectionOwner``).
* **StatusNotifierItem** (D-Bus; KDE Plasma, GNOME's AppIndicator extension, most Wayland
  panels): the name ``org.kde.StatusNotifierWatcher`` is owned on the session bus, and its
  ``IsStatusNotifierHostRegistered`` is true (Qt wants a host too). Asked with jeepney.

Qt uses the D-Bus tray when there is a watcher with a host (on X11 and Wayland alike), else
XEmbed on X11; on Wayland there is no XEmbed. With neither, Siesta opens its Models window.
Each question has a few seconds at most: a display or bus that does not answer is reported
as such, and the report goes on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from app.core.doctor.report import Item, found, missing

__all__ = ["tray_items", "xembed_owner", "status_notifier", "TIMEOUT", "WATCHER"]

TIMEOUT = 3.0
HEADLESS_PLATFORMS = ("offscreen", "minimal", "vnc", "eglfs", "linuxfb")
"""Qt platforms that have no system tray whatever the desktop offers."""
WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"

T = TypeVar("T")


class _TimedOut(Exception):
    pass


def _within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` in a daemon thread, given ``seconds`` (a display or bus that hangs is left behind)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append((True, work()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result.append((False, exc))

    thread = threading.Thread(target=run, name="siesta-doctor-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if not result:
        raise _TimedOut(f"no answer within {seconds:g} s")
    ok, value = result[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


# ---- XEmbed ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class XTray:
    display: str
    selection: str  # "_NET_SYSTEM_TRAY_S0"
    owner: int  # the owner's window id; 0: nobody


def _libx11() -> Any:
    name = ctypes.util.find_library("X11") or "libX11.so.6"
    lib = ctypes.CDLL(name)
    lib.XOpenDisplay.restype = ctypes.c_void_p
    lib.XOpenDisplay.argtypes = [ctypes.c_char_p]
    lib.XDefaultScreen.restype = ctypes.c_int
    lib.XDefaultScreen.argtypes = [ctypes.c_void_p]
    lib.XInternAtom.restype = ctypes.c_ulong
    lib.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.XGetSelectionOwner.restype = ctypes.c_ulong
    lib.XGetSelectionOwner.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    lib.XCloseDisplay.restype = ctypes.c_int
    lib.XCloseDisplay.argtypes = [ctypes.c_void_p]
    return lib


def xembed_owner(display: str) -> XTray:
    """Who owns ``_NET_SYSTEM_TRAY_S<default screen>`` on ``display``; OSError when libX11 is
    missing or the display cannot be opened."""
    try:
        lib = _libx11()
    except OSError as exc:
        raise OSError(f"libX11 cannot be loaded ({exc})") from None
    dpy = lib.XOpenDisplay(display.encode())
    if not dpy:
        raise OSError(f"cannot open display {display}")
    try:
        selection = f"_NET_SYSTEM_TRAY_S{lib.XDefaultScreen(dpy)}"
        atom = lib.XInternAtom(dpy, selection.encode(), 1)  # only if it exists: nothing is created
        owner = lib.XGetSelectionOwner(dpy, atom) if atom else 0
    finally:
        lib.XCloseDisplay(dpy)
    return XTray(display, selection, int(owner))


def _xembed_item(environ: Mapping[str, str]) -> tuple[Item, bool]:
    display = environ.get("DISPLAY", "")
    if not display:
        return missing("xembed", "XEmbed tray", "$DISPLAY is not set (no X11 display)", "environment"), False
    try:
        tray = _within(TIMEOUT, lambda: xembed_owner(display))
    except (OSError, _TimedOut) as exc:
        return missing("xembed", "XEmbed tray", f"{display}: {exc}", f"libX11 on DISPLAY={display}"), False
    source = f"XGetSelectionOwner({tray.selection}) on DISPLAY={display}"
    if tray.owner:
        return found("xembed", "XEmbed tray", {"display": display, "selection": tray.selection, "owner": tray.owner},
                     source, text=f"yes: window {tray.owner:#x} owns {tray.selection}"), True
    return found("xembed", "XEmbed tray", {"display": display, "selection": tray.selection, "owner": None},
                 source, text=f"no: nobody owns {tray.selection}"), False


# ---- StatusNotifierWatcher ------------------------------------------------------------------------

@dataclass(frozen=True)
class Watcher:
    owner: str | None  # the watcher's unique bus name; None: nobody owns the name
    host: bool | None  # IsStatusNotifierHostRegistered; None: could not be read


def session_bus_address(environ: Mapping[str, str]) -> tuple[str | None, str]:
    """The session bus's address and where it came from: ``$DBUS_SESSION_BUS_ADDRESS``, else
    the socket ``$XDG_RUNTIME_DIR/bus`` (what libdbus and Qt fall back to)."""
    address = environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if address:
        return address, "$DBUS_SESSION_BUS_ADDRESS"
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and Path(runtime, "bus").exists():
        return f"unix:path={Path(runtime, 'bus')}", "$XDG_RUNTIME_DIR/bus"
    return None, "$DBUS_SESSION_BUS_ADDRESS is not set and there is no $XDG_RUNTIME_DIR/bus"


def status_notifier(address: str, timeout: float = TIMEOUT) -> Watcher:
    """Whether ``org.kde.StatusNotifierWatcher`` is owned on the bus at ``address``, and
    whether a host registered with it. ImportError without jeepney; OSError (or jeepney's
    errors) when the bus cannot be reached."""
    from jeepney import DBusAddress, MessageType, Properties
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(bus=address, auth_timeout=timeout) as connection:
        reply = connection.send_and_get_reply(message_bus.GetNameOwner(WATCHER), timeout=timeout)
        if reply.header.message_type == MessageType.error:
            return Watcher(None, None)
        owner = str(reply.body[0])
        watcher = DBusAddress(WATCHER_PATH, bus_name=owner, interface=WATCHER)
        reply = connection.send_and_get_reply(Properties(watcher).get("IsStatusNotifierHostRegistered"),
                                              timeout=timeout)
        if reply.header.message_type == MessageType.error:
            return Watcher(owner, None)
        return Watcher(owner, bool(reply.body[0][1]))


def _sni_item(environ: Mapping[str, str]) -> tuple[Item, bool]:
    address, where = session_bus_address(environ)
    if address is None:
        return missing("status_notifier", "StatusNotifierWatcher", f"no session bus: {where}", "environment"), False
    try:
        import jeepney  # noqa: F401 - only whether it is there
    except ImportError:
        return missing("status_notifier", "StatusNotifierWatcher", "jeepney is not installed: the D-Bus tray "
                       "cannot be asked", where), False
    source = f"GetNameOwner({WATCHER}) on the session bus ({where})"
    try:
        watcher = _within(TIMEOUT + 1, lambda: status_notifier(address))
    except Exception as exc:  # noqa: BLE001 - jeepney raises its own errors, and OSError, and timeouts
        return missing("status_notifier", "StatusNotifierWatcher",
                       f"the session bus ({where}) cannot be asked: {type(exc).__name__}: {exc}", source), False
    if watcher.owner is None:
        return found("status_notifier", "StatusNotifierWatcher", {"owner": None, "host": None}, source,
                     text=f"no: nobody owns {WATCHER} on the session bus"), False
    host = {True: "with a host registered", False: "but no host registered (Qt then uses no D-Bus tray)",
            None: "(whether a host registered could not be read)"}[watcher.host]
    return found("status_notifier", "StatusNotifierWatcher", {"owner": watcher.owner, "host": watcher.host},
                 source + ", IsStatusNotifierHostRegistered",
                 text=f"yes: {watcher.owner} owns {WATCHER}, {host}"), watcher.host is not False


def tray_items(environ: Mapping[str, str]) -> Iterable[Item]:
    session = {name: environ.get(name) for name in ("XDG_SESSION_TYPE", "XDG_CURRENT_DESKTOP", "DISPLAY",
                                                    "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    shown = ", ".join(f"{k}={v}" for k, v in session.items() if v) or "none of XDG_SESSION_TYPE, " \
        "XDG_CURRENT_DESKTOP, DISPLAY, WAYLAND_DISPLAY, QT_QPA_PLATFORM is set"
    yield found("session", "desktop session", session, "environment", text=shown)
    xembed, has_xembed = _xembed_item(environ)
    sni, has_sni = _sni_item(environ)
    yield xembed
    yield sni
    qpa = (environ.get("QT_QPA_PLATFORM") or "").split(";")[0].split(":")[0]
    on_wayland = qpa.startswith("wayland") or (not qpa and bool(environ.get("WAYLAND_DISPLAY")))
    source = "Qt's rule: D-Bus if a watcher has a host, else XEmbed on X11"
    if qpa in HEADLESS_PLATFORMS:
        yield found("tray", "Qt would use", None, "$QT_QPA_PLATFORM",
                    text=f"none: QT_QPA_PLATFORM={qpa} has no tray (the app opens its Models window instead)")
    elif has_sni:
        yield found("tray", "Qt would use", "StatusNotifierItem", source, text="yes: StatusNotifierItem (D-Bus)")
    elif has_xembed and not on_wayland:
        yield found("tray", "Qt would use", "XEmbed", source, text="yes: XEmbed (X11)")
    else:
        why = "no StatusNotifierWatcher with a host" + ("" if on_wayland else " and no XEmbed tray")
        yield found("tray", "Qt would use", None, source,
                    text=f"none ({why}): the app opens its Models window instead")
