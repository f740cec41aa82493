"""A desktop's tray side of the StatusNotifierItem protocol, for tests: a private session
bus (:func:`session_bus`, a ``dbus-daemon`` of its own) and :class:`TrayHost`, which is
the ``org.kde.StatusNotifierWatcher`` and a host on it, the way KDE's panel or GNOME's
AppIndicator extension is.

An app's Qt registers its tray icon with the watcher; the host then reads the item's menu
over ``com.canonical.dbusmenu`` (``GetLayout``) and drives it as a panel does:
``AboutToShow`` and the ``opened``/``closed`` events. Qt sends ``ItemsPropertiesUpdated``
or ``LayoutUpdated`` when an exported label changes; :meth:`DBusMenu.labels_changed` waits
for one of them.

Written on jeepney (pure Python, asyncio): nothing here uses Qt, so what the test sees is
only what a real panel would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jeepney import DBusAddress, HeaderFields, MatchRule, MessageType, new_error, new_method_call, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.asyncio import DBusRouter, open_dbus_router

WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM_INTERFACE = "org.kde.StatusNotifierItem"
DBUSMENU = "com.canonical.dbusmenu"
PROPERTIES = "org.freedesktop.DBus.Properties"

# Qt reads IsStatusNotifierHostRegistered through a QDBusInterface, which learns the
# properties from introspection: without this XML, Qt sees no host and no D-Bus tray.
WATCHER_XML = f"""<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">
<node>
  <interface name="{WATCHER}">
    <method name="RegisterStatusNotifierItem"><arg name="service" type="s" direction="in"/></method>
    <method name="RegisterStatusNotifierHost"><arg name="service" type="s" direction="in"/></method>
    <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
    <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
    <property name="ProtocolVersion" type="i" access="read"/>
    <signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
    <signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
    <signal name="StatusNotifierHostRegistered"/>
  </interface>
  <interface name="{PROPERTIES}">
    <method name="Get"><arg type="s" direction="in"/><arg type="s" direction="in"/><arg type="v" direction="out"/></method>
    <method name="GetAll"><arg type="s" direction="in"/><arg type="a{{sv}}" direction="out"/></method>
  </interface>
  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg type="s" direction="out"/></method>
  </interface>
</node>
"""

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:dir={folder}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def dbus_daemon() -> str | None:
    """The ``dbus-daemon`` program, or None when it is not installed."""
    return shutil.which("dbus-daemon")


@contextlib.contextmanager
def session_bus(folder: Path, timeout: float = 10.0) -> Iterator[str]:
    """Runs a session bus of its own (socket and config in ``folder``); yields its address."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "bus.conf"
    config.write_text(BUS_CONFIG.format(folder=folder), encoding="utf-8")
    daemon = dbus_daemon()
    assert daemon is not None
    log = folder / "dbus-daemon.log"
    with log.open("w") as errors:
        process = subprocess.Popen([daemon, f"--config-file={config}", "--nofork", "--print-address=1"],
                                   stdout=subprocess.PIPE, stderr=errors, text=True)
    try:
        assert process.stdout is not None
        address = process.stdout.readline().strip()  # printed once it listens
        if not address:
            raise AssertionError(f"dbus-daemon did not start: {log.read_text()}")
        yield address
    finally:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _label(properties: dict[str, tuple[str, Any]]) -> str | None:
    """An item's label as a panel shows it: dbusmenu marks a mnemonic with ``_`` (Qt turns an
    action's ``&`` into it) and a literal underscore as ``__``."""
    value = properties.get("label")
    return value[1].replace("__", "\0").replace("_", "").replace("\0", "_") if value else None


@dataclass
class MenuItem:
    """One entry of an exported menu, as a panel reads it."""

    id: int
    label: str | None
    visible: bool
    children: list[MenuItem] = field(default_factory=list)

    def find(self, prefix: str) -> MenuItem | None:
        """The first visible item, here or below, whose label starts with ``prefix``."""
        for child in self.children:
            if child.visible and child.label is not None and child.label.startswith(prefix):
                return child
            found = child.find(prefix)
            if found is not None:
                return found
        return None


def _item(node: tuple[int, dict[str, tuple[str, Any]], list[tuple[str, Any]]]) -> MenuItem:
    ident, properties, children = node
    visible = properties.get("visible", ("b", True))[1]
    return MenuItem(ident, _label(properties), bool(visible), [_item(child[1]) for child in children])


class DBusMenu:
    """An item's menu as exported over ``com.canonical.dbusmenu``, driven as a panel does."""

    def __init__(self, router: DBusRouter, service: str, path: str) -> None:
        self.router = router
        self.address = DBusAddress(path, bus_name=service, interface=DBUSMENU)
        self._updates: asyncio.Queue[Any] = asyncio.Queue(1000)
        self._filter: Any = None

    async def watch(self) -> None:
        """Subscribes to the menu's change signals (before reading it, so none is missed)."""
        rule = MatchRule(type="signal", sender=self.address.bus_name, interface=DBUSMENU,
                         path=self.address.object_path)
        await self._call(message_bus.AddMatch(rule))
        self._filter = self.router.filter(rule, queue=self._updates)

    def close(self) -> None:
        if self._filter is not None:
            self._filter.close()

    async def _call(self, message: Any) -> tuple[Any, ...]:
        reply = await self.router.send_and_get_reply(message)
        if reply.header.message_type == MessageType.error:
            raise RuntimeError(f"D-Bus error: {reply.header.fields.get(HeaderFields.error_name)} {reply.body}")
        return reply.body

    async def layout(self) -> MenuItem:
        """The whole menu tree (``GetLayout(0, -1, [])``)."""
        _revision, root = await self._call(new_method_call(self.address, "GetLayout", "iias", (0, -1, [])))
        return _item(root)

    async def about_to_show(self, ident: int = 0) -> None:
        await self._call(new_method_call(self.address, "AboutToShow", "i", (ident,)))

    async def event(self, ident: int, event_id: str) -> None:
        """``opened``, ``closed``, ``clicked`` or ``hovered`` on item ``ident`` (0: the menu)."""
        await self._call(new_method_call(self.address, "Event", "isvu",
                                         (ident, event_id, ("i", 0), int(time.time()) & 0xFFFFFFFF)))

    def drain(self) -> None:
        """Forgets the change signals received so far."""
        while not self._updates.empty():
            self._updates.get_nowait()

    async def labels_changed(self, timeout: float) -> bool:
        """Waits up to ``timeout`` s for the next change signal; False when none came."""
        try:
            await asyncio.wait_for(self._updates.get(), timeout)
        except asyncio.TimeoutError:
            return False
        return True


class TrayHost:
    """The StatusNotifierWatcher and a host, on the bus at ``address``: what a desktop's panel is."""

    def __init__(self, router: DBusRouter) -> None:
        self.router = router
        self.items: list[str] = []
        self.item_registered = asyncio.Event()
        self._serving: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, address: str) -> AsyncIterator[TrayHost]:
        """Connects, takes the watcher's name and serves it until the block ends."""
        async with open_dbus_router(address) as router:
            host = cls(router)
            await host._start()
            try:
                yield host
            finally:
                assert host._serving is not None
                host._serving.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await host._serving

    async def _start(self) -> None:
        calls = self.router.filter(MatchRule(type="method_call", path=WATCHER_PATH), bufsize=100)
        reply = await self.router.send_and_get_reply(message_bus.RequestName(WATCHER, 4))  # 4: do not queue
        assert reply.body == (1,), f"could not own {WATCHER}: {reply.body}"
        self._serving = asyncio.create_task(self._serve(calls))

    async def _serve(self, calls: Any) -> None:
        with calls as queue:
            while True:
                await self.router.send(self._answer(await queue.get()))

    def _properties(self) -> dict[str, tuple[str, Any]]:
        return {"RegisteredStatusNotifierItems": ("as", list(self.items)),
                "IsStatusNotifierHostRegistered": ("b", True), "ProtocolVersion": ("i", 0)}

    def _answer(self, call: Any) -> Any:
        member = call.header.fields.get(HeaderFields.member)
        if member == "Introspect":
            return new_method_return(call, "s", (WATCHER_XML,))
        if member == "Get":
            value = self._properties().get(call.body[1])
            if value is None:
                return new_error(call, "org.freedesktop.DBus.Error.UnknownProperty")
            return new_method_return(call, "v", (value,))
        if member == "GetAll":
            return new_method_return(call, "a{sv}", (self._properties(),))
        if member == "RegisterStatusNotifierItem":
            # Qt passes its unique bus name; other toolkits may pass an object path.
            service = call.body[0]
            if service.startswith("/"):
                service = call.header.fields[HeaderFields.sender]
            self.items.append(service)
            self.item_registered.set()
            return new_method_return(call)
        if member == "RegisterStatusNotifierHost":
            return new_method_return(call)
        return new_error(call, "org.freedesktop.DBus.Error.UnknownMethod")

    async def item_property(self, service: str, name: str) -> Any:
        address = DBusAddress("/StatusNotifierItem", bus_name=service, interface=PROPERTIES)
        reply = await self.router.send_and_get_reply(new_method_call(address, "Get", "ss", (ITEM_INTERFACE, name)))
        if reply.header.message_type == MessageType.error:
            raise RuntimeError(f"cannot read {name}: {reply.body}")
        return reply.body[0][1]

    async def first_menu(self, timeout: float) -> DBusMenu:
        """The menu of the first item that registers (waiting up to ``timeout`` s for one)."""
        await asyncio.wait_for(self.item_registered.wait(), timeout)
        service = self.items[0]
        menu = DBusMenu(self.router, service, await self.item_property(service, "Menu"))
        await menu.watch()
        return menu
