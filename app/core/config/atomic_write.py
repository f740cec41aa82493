"""Replace a user's file without ever leaving it truncated or half-written.

The new text goes to a temporary file beside the real target (a symlink is followed, so
the link stays a link), gets the target's permissions, is flushed to disk, then renamed
over the target. A failure at any step leaves the original untouched.

Code on the event loop never writes a file itself: the fsync of a busy disk can take
seconds, and the loop also carries every stream. It hands the write to
:func:`in_order`, which runs it in the one thread that writes Siesta's own files
(recipes, settings.toml, the memory file), after every write handed over before it: two
changes to one file land in the order they were asked.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` atomically; raises OSError with the path on failure."""
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mode = 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


class SerialWriter:
    """One worker thread for blocking file work: jobs run one at a time, in the order they
    were handed over, never on the caller's thread. Its thread is joined at exit, so a
    write handed over is finished before the process ends."""

    def __init__(self, name: str) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        return self._executor.submit(fn, *args, **kwargs)

    def run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """:meth:`submit` from the event loop, to await: the job takes its place in the
        order at this call, not when the result is awaited."""
        return asyncio.wrap_future(self.submit(fn, *args, **kwargs))


FILES = SerialWriter("siesta-files")
"""The writer of Siesta's own files: recipes, settings.toml, the memory file, the autostart entry."""


def in_order(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
    """Runs ``fn(*args, **kwargs)``, a blocking write of one of Siesta's files, in
    :data:`FILES` (after every write handed over before); await it for the result."""
    return FILES.run(fn, *args, **kwargs)
