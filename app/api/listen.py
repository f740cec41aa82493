"""The front door's listening sockets, made with the socket options each OS needs so that one
port has one listener.

* **Linux and macOS:** ``SO_REUSEADDR``, as asyncio sets it there: a Siesta started again
  binds at once while the previous run's connections sit in ``TIME_WAIT``. A second
  listener on the same port is still refused on Linux (``EADDRINUSE``). On macOS (BSD
  rules) a specific address (``127.0.0.1``) can bind beside a wildcard (``0.0.0.0``)
  listener that set it too; the instance lock (:mod:`app.core.config.instance_lock`, one
  Siesta per port whatever its host) is what keeps a second Siesta off the port there.
* **Windows:** never ``SO_REUSEADDR``. There it lets a second socket bind a port that
  another one listens on, so two Siestas would both answer on 8777. Instead
  ``SO_EXCLUSIVEADDRUSE`` is set, so that no other socket binds the address, whatever
  options it sets, and a wildcard and a specific bind of the port exclude each other
  (learn.microsoft.com, "Using SO_REUSEADDR and SO_EXCLUSIVEADDRUSE"). Without an option,
  ``TIME_WAIT`` does not block a rebind on Windows. The cost: after Siesta closes,
  a connection it accepted that is still active blocks the next exclusive bind until it
  ends. Siesta closes its connections when it stops, and Windows closes them when it dies.
* **Both:** ``IPV6_V6ONLY`` on an IPv6 socket, as asyncio sets it, so ``::`` does not take
  IPv4's port as well.

:func:`listen_options` is the per-OS choice. :func:`bind_listeners` makes, sets and binds
the sockets. Both take the socket module (``net``) and the platform name as arguments, so
tests drive the Windows choice here with a recording fake of the socket.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Iterable, Sequence
from typing import Any

# winsock2.h: #define SO_EXCLUSIVEADDRUSE ((int)(~SO_REUSEADDR)), with SO_REUSEADDR 4. Python's
# socket module has the name only on Windows.
WINSOCK_SO_EXCLUSIVEADDRUSE = ~4
WSAEACCES = 10013  # the bind was DENIED: the address is held exclusively (or by another user)
WSAEADDRINUSE = 10048

AddrInfo = tuple[Any, Any, Any, str, Any]  # what socket.getaddrinfo returns, one entry


def listen_options(platform: str, family: int, net: Any = socket) -> list[tuple[int, int, int]]:
    """The ``(level, option, value)`` triples to set on a listening socket before its bind."""
    if platform == "win32":
        exclusive = getattr(net, "SO_EXCLUSIVEADDRUSE", WINSOCK_SO_EXCLUSIVEADDRUSE)
        options = [(net.SOL_SOCKET, exclusive, 1)]
    elif platform == "cygwin":
        options = []  # Winsock underneath, and no SO_EXCLUSIVEADDRUSE: no option at all, as asyncio does
    else:
        options = [(net.SOL_SOCKET, net.SO_REUSEADDR, 1)]
    if family == getattr(net, "AF_INET6", None) and hasattr(net, "IPPROTO_IPV6") and hasattr(net, "IPV6_V6ONLY"):
        options.append((net.IPPROTO_IPV6, net.IPV6_V6ONLY, 1))
    return options


def port_taken(exc: OSError, platform: str = sys.platform) -> bool:
    """Whether a bind failed because the port is taken: ``EADDRINUSE``, or on Windows also
    ``WSAEACCES``, the answer to a bind that an exclusive listener denies."""
    if exc.errno == errno.EADDRINUSE:
        return True
    return platform == "win32" and exc.errno in (WSAEADDRINUSE, WSAEACCES)


def bind_listeners(addresses: Iterable[AddrInfo], *, platform: str = sys.platform,
                   net: Any = socket) -> list[Any]:
    """One bound (not yet listening) socket per address that ``getaddrinfo`` gave, each with
    :func:`listen_options` set before its bind. The first failure closes every socket made
    so far and is raised as it came (see :func:`port_taken`)."""
    made: list[Any] = []
    try:
        for family, kind, proto, _name, address in _unique(addresses):
            sock = net.socket(family, kind, proto)
            made.append(sock)
            for level, option, value in listen_options(platform, family, net):
                sock.setsockopt(level, option, value)
            sock.bind(address)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def _unique(addresses: Iterable[AddrInfo]) -> Sequence[AddrInfo]:
    return list(dict.fromkeys(addresses))  # getaddrinfo repeats entries; the order stays
