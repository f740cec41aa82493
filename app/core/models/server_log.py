"""A model server's log: its output appended to a size-bounded file per model, written by a
thread of its own (never on the event loop's), with the last lines kept in memory for
error messages, and Siesta's own notes ("started", "exited with 1") between them.

Past its bound the file is moved to ``<name>.log.1`` and a new one starts. Windows refuses
to move a file another program holds open (the log viewer while it reads, an editor:
PermissionError, a sharing violation): the log is then copied there and emptied in place,
so it goes on being written instead of being dropped.

Secrets never reach the file nor the tail that error messages carry: each line is written, and
the tail read, through :func:`app.core.config.redact.redact_text` (a recipe's ``--api-key``
in Siesta's "starting:" note, a server that prints its own arguments). A line is redacted
whole: the end of a chunk that is not the end of a line waits for the rest (or for the log's
close), so a secret split between two reads of the pipe is still found."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import io
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from app.core.config.atomic_write import SerialWriter
from app.core.config.redact import redact_text

log = logging.getLogger(__name__)

LOG_MAX_BYTES = 2 * 1024 * 1024
LOG_TAIL_LINES = 40
LINE_MAX_BYTES = 64 * 1024  # an unfinished line longer than this is written (and redacted) as it is

LOG_WRITER = SerialWriter("siesta-logs")
"""The thread that writes every model's log (apart from recipes and settings, so a
flood of output never delays a change of settings)."""


class BoundedLog:
    """Appends a server's output to its log file, starting a fresh file past ``max_bytes``.

    Once :meth:`write_off_the_loop` is called (a started server's log), :meth:`write`
    only keeps the last lines and hands the bytes to :data:`LOG_WRITER`, which opens and
    writes the file: the event loop never waits for the disk. What waits there is bounded by
    ``max_bytes``: output beyond that is dropped, and a line in the log says how much.
    Otherwise every call writes the file at once.

    A log file that cannot be opened does not stop the server: every write then raises
    OSError (which :class:`BackendProcess` reports once and stops writing), and the tail
    is still kept for error messages. Off the loop, a failed open or write raises at the
    next write, and is kept in :attr:`error`.
    """

    def __init__(self, path: Path, max_bytes: int = LOG_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self.error: OSError | None = None  # off the loop: why nothing more is written
        self._fh: io.FileIO | None = None  # opened at the first write
        self._unfinished = b""  # the end of the last chunk, after its last newline: not yet in the file
        self._tail_unfinished = b""  # the same, for the tail
        self._open_error: OSError | None = None
        self._written = 0
        self._closed = False
        self._writer: SerialWriter | None = None
        self._lock = threading.Lock()  # the loop hands over, the writer takes: these below
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._dropped = 0
        self._flushing = False  # a flush is queued or running in the writer
        self._closing: concurrent.futures.Future[None] | None = None

    def write_off_the_loop(self, writer: SerialWriter = LOG_WRITER) -> None:
        """From now on the file is opened and written by ``writer``'s thread."""
        self._writer = writer

    def _open(self) -> io.FileIO:
        if self._fh is None:
            if self._open_error is None:
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._rotate_if_large()
                    self._fh = self.path.open("ab", buffering=0)
                    self._written = self._fh.tell()
                except OSError as exc:
                    self._open_error = exc
            if self._fh is None:
                error = self._open_error
                raise OSError(getattr(error, "errno", None), f"cannot open the log: {error}", str(self.path))
        return self._fh

    def _rotate_if_large(self) -> None:
        try:
            large = self.path.stat().st_size > self.max_bytes
        except FileNotFoundError:
            return
        if large:
            self._rotate()

    def _rotate(self) -> None:
        """Moves the (closed) log to ``<name>.log.1``. Where another program holds either file
        open and the OS refuses the move (Windows: PermissionError), copies the log there and
        empties it in place instead; should even the copy fail, the log is only emptied, its
        older lines lost rather than every later one."""
        rotated = self.path.with_suffix(self.path.suffix + ".1")
        try:
            try:
                os.replace(self.path, rotated)
                return
            except PermissionError as exc:
                refused = exc
            try:
                shutil.copyfile(self.path, rotated)
            except OSError as exc:
                log.warning("%s could not be moved (%s) nor copied (%s) to %s; its older lines are dropped",
                            self.path, refused, exc, rotated.name)
            with self.path.open("r+b") as fh:
                fh.truncate(0)
        except FileNotFoundError:  # removed meanwhile: nothing to rotate
            pass

    def _append(self, data: bytes) -> None:
        """Writes ``data`` to the file (opened, or rotated, first when needed)."""
        fh = self._open()
        if self._written + len(data) > self.max_bytes:
            self._fh = None
            fh.close()
            self._rotate()
            fh = self._open()
            self._written = 0
        fh.write(data)
        self._written += len(data)

    def _write_lines(self, data: bytes, *, final: bool = False) -> None:
        """Writes the finished lines of what came so far, their secrets replaced; the rest
        (or, with ``final``, everything) waits for the next call."""
        data, self._unfinished = _finished_lines(self._unfinished + data, final)
        if data:
            text = data.decode("utf-8", "surrogateescape")  # any bytes, given back as they came
            self._append(redact_text(text).encode("utf-8", "surrogateescape"))

    def keep_tail(self, data: bytes) -> None:
        """Keeps the last lines of ``data`` in memory (for error messages) without writing it."""
        data, self._tail_unfinished = _finished_lines(self._tail_unfinished + data, False)
        text = data.decode("utf-8", "replace")
        self.tail.extend(line for line in text.splitlines() if line.strip())

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        self.keep_tail(data)
        if self._writer is None:
            self._write_lines(data)
            return
        with self._lock:
            if self.error is not None:
                raise self.error
            if self._pending_bytes + len(data) > self.max_bytes:
                self._dropped += len(data)
            else:
                self._pending.append(data)
                self._pending_bytes += len(data)
            start, self._flushing = not self._flushing, True
        if start:
            self._writer.submit(self._flush)

    def _flush(self) -> None:
        """In the writer's thread: writes what was handed over, until nothing waits."""
        while True:
            with self._lock:
                chunks, dropped = self._pending, self._dropped
                self._pending, self._pending_bytes, self._dropped = [], 0, 0
                if not chunks and not dropped:
                    self._flushing = False
                    return
            try:
                self._write_lines(b"".join(chunks))
                if dropped:  # what came after these chunks
                    self._write_lines(_note_line(f"{dropped} bytes of output dropped: the disk was too slow to take them"))
            except OSError as exc:
                with self._lock:
                    self.error = exc
                    self._pending, self._pending_bytes, self._dropped, self._flushing = [], 0, 0, False
                return

    def note(self, message: str) -> None:
        self.write(_note_line(message))

    def tail_text(self, lines: int = 15) -> str:
        """The last ``lines`` lines (an unfinished one too), secrets replaced: what an error shows."""
        kept = list(self.tail)
        unfinished = self._tail_unfinished.decode("utf-8", "replace")
        if unfinished.strip():
            kept.append(unfinished)
        return redact_text("\n".join(kept[-lines:]))

    def close(self) -> None:
        """Closes the file; off the loop, once what was handed over is written."""
        if self._closed:
            return
        self._closed = True
        if self._writer is None:
            self._close_file()
        else:
            self._closing = self._writer.submit(self._close_file)

    def _close_file(self) -> None:
        try:
            self._write_lines(b"", final=True)
        except OSError as exc:  # the last, unfinished line is lost; the file is closed all the same
            self.error = self.error or exc
        if self._fh is not None:
            self._fh.close()

    async def flushed(self) -> None:
        """Waits until everything written so far is in the file (but an unfinished last line)."""
        if self._writer is not None:
            await self._writer.run(lambda: None)  # after the flush that takes it: one thread, in order

    async def wait_closed(self) -> None:
        """Waits until :meth:`close` has written everything and closed the file."""
        if self._closing is not None:
            await asyncio.wrap_future(self._closing)


def _finished_lines(data: bytes, final: bool) -> tuple[bytes, bytes]:
    """``data`` cut after its last newline: (the finished lines, the rest). With ``final``, or
    past LINE_MAX_BYTES without a newline, all of it is finished."""
    cut = len(data) if final else data.rfind(b"\n") + 1
    if len(data) - cut > LINE_MAX_BYTES:
        cut = len(data)
    return data[:cut], data[cut:]


def _note_line(message: str) -> bytes:
    return f"--- siesta {time.strftime('%Y-%m-%d %H:%M:%S')}: {message}\n".encode()


def safe_note(log: BoundedLog, message: str) -> Exception | None:
    """Writes a Siesta note to a model's log; returns the error of a failed write, never raises it."""
    try:
        log.note(message)
    except Exception as exc:  # noqa: BLE001 - a full disk must not stop a server from starting or stopping
        return exc
    return None
