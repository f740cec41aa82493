"""The front door's listening sockets (app/api/listen.py): one listener per port on every OS.

The options each OS gets are asserted through a recording fake of the socket module, with
the constants of that OS's headers; the real sockets of this machine, and a second bind of
a port in use, are tested here for real.

The fake follows:

* Python's ``socket.socket.setsockopt(level, optname, value)`` and ``bind(address)``
  (https://docs.python.org/3/library/socket.html#socket.socket.setsockopt);
* Winsock: ``setsockopt`` (https://learn.microsoft.com/en-us/windows/win32/api/winsock/nf-winsock-setsockopt),
  ``SO_EXCLUSIVEADDRUSE`` (https://learn.microsoft.com/en-us/windows/win32/winsock/so-exclusiveaddruse), and
  "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"
  (https://learn.microsoft.com/en-us/windows/win32/winsock/using-so-reuseaddr-and-so-exclusiveaddruse):
  an option must be set before ``bind`` to count; a bind the exclusive listener denies fails
  with WSAEACCES (10013), one on an address in use with WSAEADDRINUSE (10048), the codes of
  https://learn.microsoft.com/en-us/windows/win32/winsock/windows-sockets-error-codes-2;
* the constants of winsock2.h / ws2def.h / ws2ipdef.h (SOL_SOCKET 0xffff, SO_REUSEADDR 4,
  SO_EXCLUSIVEADDRUSE ~SO_REUSEADDR, AF_INET6 23, IPPROTO_IPV6 41, IPV6_V6ONLY 27), of Linux's
  asm-generic/socket.h (SOL_SOCKET 1, SO_REUSEADDR 2, AF_INET6 10, IPV6_V6ONLY 26) and of
  macOS's sys/socket.h (SOL_SOCKET 0xffff, SO_REUSEADDR 4, AF_INET6 30, IPV6_V6ONLY 27).
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from app.api.listen import (
    WSAEACCES,
    WSAEADDRINUSE,
    bind_listeners,
    listen_options,
    port_taken,
)
from app.api.server import ApiServer, PortInUse
from tests.portable import WINDOWS

WINSOCK = SimpleNamespace(SOL_SOCKET=0xFFFF, SO_REUSEADDR=4, SO_EXCLUSIVEADDRUSE=~4, AF_INET=2, AF_INET6=23,
                          SOCK_STREAM=1, IPPROTO_TCP=6, IPPROTO_IPV6=41, IPV6_V6ONLY=27)
LINUX_NET = SimpleNamespace(SOL_SOCKET=1, SO_REUSEADDR=2, AF_INET=2, AF_INET6=10, SOCK_STREAM=1, IPPROTO_TCP=6,
                            IPPROTO_IPV6=41, IPV6_V6ONLY=26)
MACOS_NET = SimpleNamespace(SOL_SOCKET=0xFFFF, SO_REUSEADDR=4, AF_INET=2, AF_INET6=30, SOCK_STREAM=1, IPPROTO_TCP=6,
                            IPPROTO_IPV6=41, IPV6_V6ONLY=27)


@dataclass
class FakeSocket:
    """Records each call in order; ``bind`` fails with ``fail`` when given."""

    family: int
    calls: list[tuple[Any, ...]]
    fail: OSError | None = None
    closed: bool = False

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.calls.append(("setsockopt", self.family, level, option, value))

    def bind(self, address: tuple[Any, ...]) -> None:
        self.calls.append(("bind", self.family, address))
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed = True
        self.calls.append(("close", self.family))


@dataclass
class FakeNet:
    """A socket module: one OS's constants, and ``socket()`` making recording sockets."""

    constants: SimpleNamespace
    fail_on_family: dict[int, OSError] = field(default_factory=dict)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    made: list[FakeSocket] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.constants, name)

    def socket(self, family: int, kind: int, proto: int) -> FakeSocket:
        sock = FakeSocket(family, self.calls, self.fail_on_family.get(family))
        self.made.append(sock)
        return sock


def addresses(net: SimpleNamespace) -> list[tuple[Any, ...]]:
    """What getaddrinfo("localhost", 8777, type=SOCK_STREAM, flags=AI_PASSIVE) gives: IPv6 and IPv4."""
    return [(net.AF_INET6, net.SOCK_STREAM, net.IPPROTO_TCP, "", ("::1", 8777, 0, 0)),
            (net.AF_INET, net.SOCK_STREAM, net.IPPROTO_TCP, "", ("127.0.0.1", 8777)),
            (net.AF_INET, net.SOCK_STREAM, net.IPPROTO_TCP, "", ("127.0.0.1", 8777))]  # getaddrinfo repeats


def test_windows_sets_exclusive_address_use_and_never_reuse_address_each_before_its_bind() -> None:
    net = FakeNet(WINSOCK)
    made = bind_listeners(addresses(WINSOCK), platform="win32", net=net)
    assert made == net.made and len(made) == 2
    assert net.calls == [
        ("setsockopt", 23, 0xFFFF, ~4, 1),  # SOL_SOCKET, SO_EXCLUSIVEADDRUSE
        ("setsockopt", 23, 41, 27, 1),  # IPPROTO_IPV6, IPV6_V6ONLY
        ("bind", 23, ("::1", 8777, 0, 0)),
        ("setsockopt", 2, 0xFFFF, ~4, 1),
        ("bind", 2, ("127.0.0.1", 8777)),
    ]
    assert not any(c[0] == "setsockopt" and c[3] == WINSOCK.SO_REUSEADDR for c in net.calls)


def test_windows_without_the_name_in_its_socket_module_uses_winsock2s_value() -> None:
    bare = SimpleNamespace(**{k: v for k, v in vars(WINSOCK).items() if k != "SO_EXCLUSIVEADDRUSE"})
    assert listen_options("win32", bare.AF_INET, bare) == [(0xFFFF, -5, 1)]


@pytest.mark.parametrize("platform, net", [("linux", LINUX_NET), ("darwin", MACOS_NET)])
def test_linux_and_macos_keep_reuse_address_for_time_wait(platform: str, net: SimpleNamespace) -> None:
    fake = FakeNet(net)
    bind_listeners(addresses(net), platform=platform, net=fake)
    assert fake.calls == [
        ("setsockopt", net.AF_INET6, net.SOL_SOCKET, net.SO_REUSEADDR, 1),
        ("setsockopt", net.AF_INET6, net.IPPROTO_IPV6, net.IPV6_V6ONLY, 1),
        ("bind", net.AF_INET6, ("::1", 8777, 0, 0)),
        ("setsockopt", net.AF_INET, net.SOL_SOCKET, net.SO_REUSEADDR, 1),
        ("bind", net.AF_INET, ("127.0.0.1", 8777)),
    ]


def test_cygwin_sets_no_address_option_as_asyncio_does() -> None:
    assert listen_options("cygwin", WINSOCK.AF_INET, WINSOCK) == []


def test_a_refused_bind_closes_every_socket_made_and_is_raised_as_it_came() -> None:
    denied = OSError(WSAEACCES, "An attempt was made to access a socket in a way forbidden by its access permissions")
    net = FakeNet(WINSOCK, fail_on_family={WINSOCK.AF_INET: denied})
    with pytest.raises(OSError) as info:
        bind_listeners(addresses(WINSOCK), platform="win32", net=net)
    assert info.value is denied
    assert [s.closed for s in net.made] == [True, True]  # the IPv6 one that was bound, and the refused one
    assert net.calls[-2:] == [("close", 23), ("close", 2)]


def test_what_counts_as_the_port_taken_on_each_os() -> None:
    assert port_taken(OSError(WSAEADDRINUSE, "in use"), "win32")
    assert port_taken(OSError(WSAEACCES, "denied by an exclusive listener"), "win32")
    assert not port_taken(OSError(WSAEACCES, "denied"), "linux")
    assert port_taken(OSError(errno.EADDRINUSE, "Address already in use"), "linux")
    assert not port_taken(OSError(errno.EACCES, "Permission denied"), "linux")  # port 80 as a user: not Siesta's


def test_this_machines_sockets_get_this_oss_options() -> None:
    infos = socket.getaddrinfo("127.0.0.1", 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    [sock] = bind_listeners(infos)
    try:
        if WINDOWS:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE) == 1
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 0
        else:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) != 0
        assert sock.getsockname()[1] > 0
    finally:
        sock.close()


async def test_a_second_front_door_on_the_port_is_refused_and_the_first_keeps_answering(front_door, manager_factory):
    _manager, http, url = await front_door()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(PortInUse) as info:
        await ApiServer(await manager_factory()).start(port=port)
    assert f"port {port} on 127.0.0.1 is already in use (setting 'port', from " in str(info.value)
    async with http.get(f"{url}/api/v1/health") as resp:
        assert resp.status == 200
