"""``siesta pull ORG/REPO[:QUANT]``: a GGUF model from the Hugging Face Hub into the shared
cache, with a progress bar (speed and time left), then its recipe; through
:mod:`app.core.hub.pull` as the tray app's "Download model..." dialog does. Runs in this
process: no running instance is needed (a running one sees the new recipe at once).

Ctrl-C stops the download and keeps what has arrived; the same command resumes it. A
second Ctrl-C stops at once.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from app.cli.context import Context

INTERRUPTED = 130


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:02:03``."""
    seconds = int(max(seconds, 0) + 0.5)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(done: int, total: int, speed: float | None, width: int = 30) -> str:
    """``[#########.........]  45%  120 MB / 268 MB  12.3 MB/s  0:12 left``."""
    from app.core.config.sizes import format_bytes

    fraction = done / total if total else 1.0
    filled = int(width * fraction)
    line = f"[{'#' * filled}{'.' * (width - filled)}] {int(fraction * 100):3d}%  " \
           f"{format_bytes(done)} / {format_bytes(total)}"
    if speed:
        line += f"  {format_bytes(speed)}/s"
        if done < total:
            line += f"  {format_duration((total - done) / speed)} left"
    return line


class ProgressBar:
    """Redraws one line on a terminal at most every 0.2 s; speed over the last 5 s."""

    def __init__(self, stream: TextIO, *, window: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.samples: deque[tuple[float, int]] = deque()
        self.window = window
        self.last_draw = 0.0
        self.drawn = False

    def speed(self, now: float, done: int) -> float | None:
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        if now - t0 < 0.5 or done <= d0:
            return None
        return (done - d0) / (now - t0)

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        speed = self.speed(now, done)
        if not self.tty or (now - self.last_draw < 0.2 and done < total):
            return
        self.last_draw = now
        self.stream.write("\r" + progress_line(done, total, speed) + "\033[K")
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def say(self, line: str) -> None:
        self.end()
        print(line, file=self.stream, flush=True)


def pull_command(ctx: Context) -> int:
    from app.core.hub.client import HubError
    from app.core.hub.download import DownloadCancelled
    from app.core.hub.pull import pull

    if not ctx.args.verbose:  # one line per request would run through the progress bar
        for noisy in ("httpx", "httpx2", "huggingface_hub", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    bar = ProgressBar(sys.stderr)
    cancel = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous = signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        result = pull(ctx.args.ref, recipes_dir=ctx.paths.recipes_dir, name=ctx.args.name,
                      progress=bar.update, cancel=cancel, status=bar.say)
    except DownloadCancelled as exc:
        bar.end()
        where = f" ({exc.partial})" if exc.partial else ""
        print(f"siesta: interrupted; what was downloaded is kept{where}: run the same command again to resume",
              file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        bar.end()
        print("siesta: interrupted; what was downloaded is kept: run the same command again to resume",
              file=sys.stderr)
        return INTERRUPTED
    except HubError as exc:
        bar.end()
        print(f"siesta: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    bar.end()
    print(f"model {result.model_path}" + (f"\nmmproj {result.mmproj_path}" if result.mmproj_path else ""))
    print(f"recipe {result.recipe_path}" + ("" if result.created else " (already there)"))
    print(f'use the model name "{result.name}" in requests, e.g. {{"model": "{result.name}", "messages": [...]}}')
    return 0
