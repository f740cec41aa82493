"""The tray menu as KDE Plasma and GNOME's AppIndicator extension show it: a
StatusNotifierItem whose menu is exported over D-Bus (``com.canonical.dbusmenu``) and drawn
by the panel, so the ``QMenu`` widget is never shown.

The whole app runs as a process of its own (``sni_app.py``), on X (Xvfb, ``xcb``) with a
session bus of its own (``dbus-daemon``) on which the test is the panel
(:class:`sni_host.TrayHost`): the StatusNotifierWatcher Qt registers the icon with, and a
host that reads the menu with ``GetLayout`` and opens and closes it with ``AboutToShow``
and the ``opened``/``closed`` events, as panels do.

Why a process on X: Qt makes a D-Bus tray icon when its platform theme is one of its Unix
desktop themes (those of the xcb platform; Wayland's too, by Qt's source) and a watcher
with a host is on the session bus as the icon is made, so the watcher must be there
before the app starts. The ``offscreen`` platform has a theme of its own that makes no
tray icon at all (``isSystemTrayAvailable()`` is false with a watcher on the bus), and
``QT_QPA_PLATFORMTHEME=gtk3`` ends the process without a display, so the in-process
offscreen tests never see this path.

Without ``dbus-daemon`` or ``Xvfb`` the test is skipped, saying which; under ``CI`` (where
.ci/run installs both) it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.core.models.backend import free_port
from tests.desktop import bus, display  # noqa: F401 - fixtures
from tests.ui.tray.sni_host import DBusMenu, TrayHost

REPO = Path(__file__).resolve().parents[3]
HARNESS = Path(__file__).with_name("sni_app.py")
UNSEEN_LIMIT = 3.0  # the app's "never said closed" limit, turned down from a minute
COUNTDOWN = re.compile(r"tiny \(\d+(\.\d)? MB\): idle, unloads in (5:00|4:[0-5]\d)")
STOPPED_LINE = "no sign of the tray menu"


async def _label(menu: DBusMenu, prefix: str) -> str:
    item = (await menu.layout()).find(prefix)
    assert item is not None and item.label is not None, f"no menu item {prefix!r}"
    return item.label


async def _next_label(menu: DBusMenu, prefix: str, old: str, timeout: float = 3.0) -> str:
    """Waits for the exported label starting with ``prefix`` to differ from ``old``."""
    deadline = time.monotonic() + timeout
    while True:
        label = await _label(menu, prefix)
        if label != old:
            return label
        left = deadline - time.monotonic()
        assert left > 0, f"{old!r} did not change within {timeout} s"
        await menu.labels_changed(left)


async def _stays(menu: DBusMenu, prefix: str, seconds: float) -> bool:
    """Whether the label starting with ``prefix`` stays as it is for ``seconds``."""
    before = await _label(menu, prefix)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        await menu.labels_changed(left)
        if await _label(menu, prefix) != before:
            return False
    return True


class _Log:
    """The app's stderr, read as it comes (so the pipe never fills), with a wait for a line."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.lines: list[str] = []
        self._grew = asyncio.Event()
        self._reading = asyncio.ensure_future(self._read(stream))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while raw := await stream.readline():
            self.lines.append(raw.decode(errors="replace"))
            self._grew.set()

    async def line(self, needle: str, timeout: float) -> str:
        """The first line holding ``needle``, waiting up to ``timeout`` s for it."""
        async def find() -> str:
            while True:
                found = next((line for line in self.lines if needle in line), None)
                if found is not None:
                    return found
                assert not self._reading.done(), f"the app's stderr ended before {needle!r}"
                self._grew.clear()
                await self._grew.wait()

        return await asyncio.wait_for(find(), timeout)

    async def close(self) -> str:
        await asyncio.wait_for(self._reading, 30)
        return "".join(self.lines)


async def test_countdowns_tick_while_a_dbus_menu_is_open_and_stop_without_a_closed_event(
        display, bus, paths, write_recipe) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    port = free_port()
    env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb", "DBUS_SESSION_BUS_ADDRESS": bus,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for variable in ("WAYLAND_DISPLAY", "QT_QPA_PLATFORMTHEME", "XDG_CURRENT_DESKTOP"):
        env.pop(variable, None)
    async with TrayHost.running(bus) as host:
        app = await asyncio.create_subprocess_exec(
            sys.executable, str(HARNESS), str(UNSEEN_LIMIT), "--config-dir", str(paths.config_dir),
            "--port", str(port), "--stop-timeout", "3", cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert app.stderr is not None
        log = _Log(app.stderr)
        try:
            menu = await host.first_menu(30)  # the tray is built once the API is up
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
                (await http.post("/api/v1/load", json={"model": "tiny"})).raise_for_status()

            # Opened the way a panel opens it: the exported labels count down.
            await menu.about_to_show(0)
            await menu.event(0, "opened")
            first = await _label(menu, "tiny")
            assert COUNTDOWN.fullmatch(first), first
            second = await _next_label(menu, "tiny", first)
            assert COUNTDOWN.fullmatch(second), second

            # Closed with the "closed" event: they stop at once.
            await menu.event(0, "closed")
            assert await _stays(menu, "tiny", 1.5), "the countdown ticked after the menu was closed"

            # Opened again, and the host never says it closed: after the limit with no sign
            # of the menu (a hovered entry is one), they stop on their own.
            await menu.about_to_show(0)
            await menu.event(0, "opened")
            label = await _next_label(menu, "tiny", await _label(menu, "tiny"))
            await _next_label(menu, "tiny", label)
            await menu.event((await menu.layout()).find("Settings").id, "hovered")
            hovered_at = time.monotonic()
            await log.line(STOPPED_LINE, UNSEEN_LIMIT + 10)
            assert time.monotonic() - hovered_at > UNSEEN_LIMIT - 0.5, "stopped before the limit after a sign"
            assert await _stays(menu, "tiny", 1.5), "the countdown still ticks after the limit"

            # The next AboutToShow starts them again.
            await menu.about_to_show(0)
            await _next_label(menu, "tiny", await _label(menu, "tiny"))
            await menu.event(0, "closed")
            menu.close()
        finally:
            if app.returncode is None:
                app.terminate()
            code = await asyncio.wait_for(app.wait(), 30)
            output = await log.close()
        assert code == 0, output
