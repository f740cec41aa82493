"""The interface every OS module of :mod:`app.core.models.processes` implements: a
:class:`Platform` that makes a :class:`ServerTree` for each model server, and says how the
watchdog checks a process's identity. Nothing here touches the OS."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Platform", "ProcessSetupError", "ServerTree", "define_start_time"]


class ProcessSetupError(OSError):
    """The OS would not set up what holds a server's process tree (a Windows job object):
    the server must not run, since nothing could stop all of it or clean up after a crash."""


class ServerTree(Protocol):
    """One model server and every process it starts, held the way this OS can hold a tree.

    Its life: made before the server starts (:meth:`Platform.new_tree`), the server started
    with :meth:`spawn_options`, :meth:`adopt` with its pid at once; then any number of
    :meth:`terminate` and :meth:`kill`; :meth:`release` once the server has exited (or never
    started). Each step after :meth:`adopt` is safe to repeat and never raises.
    """

    def spawn_options(self) -> dict[str, Any]:
        """The keyword arguments the server's ``create_subprocess_exec`` gets."""

    def adopt(self, pid: int) -> None:
        """Takes the just-started server into the tree; ProcessSetupError if the OS refuses
        (the server then runs outside the tree: the caller ends it)."""

    def terminate(self) -> None:
        """The first step of a stop: SIGTERM to the group on POSIX; on Windows, where a
        windowless server has no console to send CTRL_BREAK to, the end of the whole tree."""

    def kill(self) -> None:
        """The stop that cannot be refused: SIGKILL to the group; the end of the job."""

    def release(self) -> None:
        """After the server exited: ends whatever it left running, and lets go of the tree."""


class Platform(Protocol):
    """One OS's way of running model servers, chosen once at start-up."""

    name: str  # "posix" (Linux and every other POSIX system), "macos" or "windows"
    # The watchdog's source (run as ``python -I -S -c SOURCE``: no site-packages, no psutil),
    # or None where no watchdog is needed (Windows: the kill-on-close job objects do its work).
    watchdog_source: str | None
    # The OS calls that start processes, here so that tests can put fakes in their place.
    spawn: Callable[..., Awaitable[asyncio.subprocess.Process]]  # asyncio.create_subprocess_exec
    popen: Callable[..., subprocess.Popen[Any]]  # subprocess.Popen

    def new_tree(self) -> ServerTree:
        """What will hold the next server; ProcessSetupError if the OS refuses (no server has
        started yet, so nothing is left behind)."""

    def start_time(self, pid: int) -> str | None:
        """When process ``pid`` started, as the watchdog's own ``start_time`` says it (the
        same code runs in both); None when there is no such process or it cannot be told."""

    def watchdog_options(self) -> dict[str, Any]:
        """The keyword arguments the watchdog's ``Popen`` gets."""


def define_start_time(source: str) -> Callable[[int], str | None]:
    """The ``start_time`` function that ``source`` (a watchdog's start-time part) defines, for
    this process: the same text runs here and in the watchdog, so the two always agree."""
    namespace: dict[str, Any] = {"__name__": "siesta_start_time"}
    exec(compile(source, "<start_time>", "exec"), namespace)  # noqa: S102 - our own constant source
    return namespace["start_time"]
