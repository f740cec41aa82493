"""One Siesta per user and config dir: a second launch shows the first one's window.

A tray connected to a Siesta elsewhere (``siesta --connect URL``) is one per user and URL
instead: it neither blocks nor is blocked by the local tray, and a second one for the same
URL shows the first one's window.

The first instance takes a lock file and listens on a local socket (``QLocalServer``),
both named from the user and the config dir, so two users, or one user with two config
dirs, each get their own. A later launch that finds the lock taken connects to the
socket, sends ``show``, and exits; the running instance shows its Models window.

The socket listens from the start, before the manager, the API and the tray are up (a
second launch must find it), so a request can come before there is a window to show: it
is answered at once and held, and :meth:`SingleInstance.deliver_requests` (called by the
app once its tray or window exists) emits it then.

The lock, not the socket, decides who runs: a lock left by a crashed instance is
recognised as stale (its process is gone) and taken over, and its leftover socket file
is removed before listening.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import tempfile
from pathlib import Path

from PySide6.QtCore import QByteArray, QLockFile, QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)

SHOW = b"show\n"
ACK = b"ok\n"


def instance_name(config_dir: Path, connect_url: str | None = None) -> str:
    """``siesta-<user>-<hash of the config dir>``, or of the URL ``siesta --connect`` is
    given: short enough for a socket path."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "user"
    if connect_url is not None:
        what = "connect\0" + connect_url.strip().rstrip("/").lower()
    else:
        what = str(config_dir.expanduser().resolve())
    digest = hashlib.sha256(f"{user}\0{what}".encode()).hexdigest()[:16]
    safe_user = "".join(c for c in user if c.isalnum() or c in "-_")[:32] or "user"
    return f"siesta-{safe_user}-{digest}"


def lock_dir() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.access(runtime, os.W_OK):
        return Path(runtime)
    return Path(tempfile.gettempdir())


class SingleInstance(QObject):
    """Holds the instance lock and answers later launches."""

    showRequested = Signal()

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.name = name
        self.lock = QLockFile(str(lock_dir() / f"{name}.lock"))
        self.lock.setStaleLockTime(0)  # long-lived: only a dead owner makes it stale
        self.server: QLocalServer | None = None
        self._delivering = False
        self._held = False  # a request came before deliver_requests()

    def acquire(self) -> bool:
        """Takes the lock and starts listening; False when another instance holds it."""
        if not self.lock.tryLock(100):
            return False
        QLocalServer.removeServer(self.name)  # a socket file left by a crashed instance
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            log.warning("single instance: cannot listen on %s: %s", self.name, server.errorString())
        else:
            server.newConnection.connect(self._on_connection)
            self.server = server
        return True

    def _on_connection(self) -> None:
        assert self.server is not None
        while self.server.hasPendingConnections():
            socket = self.server.nextPendingConnection()
            socket.readyRead.connect(lambda s=socket: self._on_ready_read(s))
            socket.disconnected.connect(socket.deleteLater)

    def _on_ready_read(self, socket: QLocalSocket) -> None:
        data = bytes(socket.readAll().data())
        if SHOW.strip() in data:
            socket.write(QByteArray(ACK))
            socket.flush()
            if self._delivering:
                self.showRequested.emit()
            else:
                log.info("single instance: another launch asked to show a window during start-up; "
                         "it is shown once there is one")
                self._held = True

    def deliver_requests(self) -> None:
        """From now on each request emits ``showRequested``; one that came earlier (during
        start-up) is emitted now."""
        self._delivering = True
        if self._held:
            self._held = False
            self.showRequested.emit()

    def ask_running_to_show(self, timeout_ms: int = 3000) -> bool:
        """From a second launch: asks the running instance to show its window.

        Blocking, with a bound: it runs before this process has an event loop."""
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(timeout_ms):
            return False
        socket.write(QByteArray(SHOW))
        if not socket.waitForBytesWritten(timeout_ms):
            return False
        ok = socket.waitForReadyRead(timeout_ms) and ACK.strip() in bytes(socket.readAll().data())
        socket.disconnectFromServer()
        return ok

    def release(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.lock.isLocked():
            self.lock.unlock()
