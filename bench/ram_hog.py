"""The memory-pressure helper of :mod:`bench.relief_figures`: another program that keeps allocating.

    python bench/ram_hog.py --total BYTES [--step BYTES] [--every SECONDS]

Prints ``ready`` and waits for a ``go`` line on stdin (``go BYTES`` replaces ``--total``); then
allocates ``--step`` bytes every
``--every`` seconds (or as fast as the kernel hands pages out, if slower), touching every
page, until it holds ``--total`` bytes; prints one JSON line (``{"done": t, "steps": [[t,
bytes held], ...]}``, monotonic times) and holds the memory until stdin says ``stop`` or
closes. A ``stop`` or a closed stdin during the allocation ends it at once.

It never outlives the benchmark: stdin closes when the benchmark dies; on Linux the kernel
also sends it SIGKILL when its parent dies (``PR_SET_PDEATHSIG``); and it exits after
:data:`LIFETIME` seconds whatever happens. Standalone (no import of the app or of aiohttp),
so it starts fast and small.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import sys
import time

LIFETIME = 60.0  # s: the longest this helper lives, whatever it is told


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the prctl
        os._exit(1)


def _told_to_stop(timeout: float) -> bool:
    """True when stdin says ``stop`` or closes within ``timeout`` seconds."""
    ready, _, _ = select.select([sys.stdin], [], [], max(0.0, timeout))
    if not ready:
        return False
    line = sys.stdin.readline()
    return not line or line.strip() == "stop"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--total", type=int, required=True, help="bytes to allocate in all")
    parser.add_argument("--step", type=int, default=64 * 2**20, help="bytes per step")
    parser.add_argument("--every", type=float, default=0.05, help="seconds between steps")
    args = parser.parse_args()
    _die_with_parent()
    born = time.monotonic()
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    print("ready", flush=True)
    line = sys.stdin.readline() if select.select([sys.stdin], [], [], LIFETIME)[0] else ""
    words = line.split()
    if not words or words[0] != "go":
        return 0
    if len(words) > 1:
        args.total = int(words[1])
    held: list[bytearray] = []
    steps: list[tuple[float, int]] = []
    total = 0
    start = time.monotonic()
    k = 0
    while total < args.total:
        size = min(args.step, args.total - total)
        buf = bytearray(size)  # CPython zero-fills it: every page is written, so resident
        buf[::page] = b"\x01" * len(range(0, size, page))  # and once more, in case it was calloc'd
        held.append(buf)
        total += size
        steps.append((time.monotonic(), total))
        k += 1
        if total < args.total and _told_to_stop(start + k * args.every - time.monotonic()):
            return 0
    print(json.dumps({"done": steps[-1][0], "start": start, "steps": steps}), flush=True)
    while not _told_to_stop(born + LIFETIME - time.monotonic()):
        if time.monotonic() >= born + LIFETIME:
            break
    held.clear()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
