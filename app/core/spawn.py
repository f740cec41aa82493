"""How Siesta starts a child process on this OS: the keyword arguments every
``subprocess`` and ``asyncio.create_subprocess_exec`` call in ``app/`` adds, from one place.

On Windows every child gets ``CREATE_NO_WINDOW``. A console program (``llama-server.exe``,
``cmake``, ``pip``, a ``command`` backend) started by a program that has no console of its
own (the tray app: ``pythonw.exe -m app``, or the bundle's windowless ``siestaw.exe``) would
otherwise open a console window of its own, one per model, and closing that window would
end the model. With the flag it runs with a hidden console; its output still goes to the
pipes Siesta reads. (Microsoft's "Process Creation Flags":
https://learn.microsoft.com/en-us/windows/win32/procthread/process-creation-flags)

``own_session=True`` asks for what a model server needs: on POSIX a session (and process
group) of its own, so a Ctrl-C in Siesta's terminal does not reach it and it can be signalled
as a group. On Windows a hidden console already keeps the terminal's Ctrl-C away, and a job
object (``app/core/models/processes/windows.py``) holds the tree.

Standard library only, and imports nothing of Siesta: ``app/core/engine/build.py`` runs before
Siesta's dependencies are installed.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CREATE_NO_WINDOW", "WINDOWS", "child_options"]

CREATE_NO_WINDOW = 0x08000000  # subprocess.CREATE_NO_WINDOW, which exists only on Windows
WINDOWS = os.name == "nt"  # chosen once, at start-up


def child_options(*, own_session: bool = False, windows: bool | None = None) -> dict[str, Any]:
    """The keyword arguments a child process gets on this OS (``windows`` says which OS to
    answer for; by default this one): ``{"creationflags": CREATE_NO_WINDOW}`` on Windows;
    ``{"start_new_session": True}`` on POSIX with ``own_session``, else nothing."""
    if WINDOWS if windows is None else windows:
        return {"creationflags": CREATE_NO_WINDOW}
    return {"start_new_session": True} if own_session else {}
