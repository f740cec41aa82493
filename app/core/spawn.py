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

:func:`child_env` is the environment a child gets: Siesta's own, without Siesta's secrets
(``SIESTA_API_KEY``, ``SIESTA_REMOTE_<NAME>_API_KEY``: a model server, or anything it runs,
has no business calling Siesta or its remotes with Siesta's keys). Other secrets stay: the
user set them for the programs Siesta runs (``HF_TOKEN``, which ``llama-server -hf`` needs
for a gated model).

Standard library only, and imports nothing of Siesta: ``app/core/engine/build.py`` runs before
Siesta's dependencies are installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["CREATE_NO_WINDOW", "WINDOWS", "child_env", "child_options", "is_siesta_secret"]

CREATE_NO_WINDOW = 0x08000000  # subprocess.CREATE_NO_WINDOW, which exists only on Windows
WINDOWS = os.name == "nt"  # chosen once, at start-up
SIESTA_PREFIX = "SIESTA_"
SECRET_WORDS = frozenset({"KEY", "KEYS", "APIKEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "PASSPHRASE",
                          "CREDENTIAL", "CREDENTIALS", "AUTH"})
"""A ``SIESTA_`` variable with one of these words in its name holds one of Siesta's secrets."""


def child_options(*, own_session: bool = False, windows: bool | None = None) -> dict[str, Any]:
    """The keyword arguments a child process gets on this OS (``windows`` says which OS to
    answer for; by default this one): ``{"creationflags": CREATE_NO_WINDOW}`` on Windows;
    ``{"start_new_session": True}`` on POSIX with ``own_session``, else nothing."""
    if WINDOWS if windows is None else windows:
        return {"creationflags": CREATE_NO_WINDOW}
    return {"start_new_session": True} if own_session else {}


def is_siesta_secret(name: str) -> bool:
    """Whether environment variable ``name`` is one of Siesta's own secrets: a ``SIESTA_``
    variable named for a key, token, secret or password (``SIESTA_API_KEY``,
    ``SIESTA_REMOTE_GPUBOX_API_KEY``), in any case (Windows' names have none). Siesta's other
    variables stay: a child may be Siesta itself (the engine build reads ``SIESTA_ENGINE_CACHE``)."""
    upper = name.upper()
    return upper.startswith(SIESTA_PREFIX) and not SECRET_WORDS.isdisjoint(re.split(r"[^A-Z0-9]+", upper))


def child_env(extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child process gets: ``environ`` (default: this process's) without
    Siesta's own secrets (:func:`is_siesta_secret`), then ``extra`` (a recipe's ``env``:
    what the user names there is passed as written)."""
    env = {name: value for name, value in (os.environ if environ is None else environ).items()
           if not is_siesta_secret(name)}
    env.update(extra or {})
    return env
