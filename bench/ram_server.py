"""A model server that holds real RAM: ``python bench/ram_server.py --port N --mb M``.

It allocates ``M`` MiB and writes one byte in every page (so all of it is resident, as a
loaded model's weights are), then serves as :mod:`bench.fake_server` does (``GET`` answers
``{"status":"ok"}``, so ``/health`` works; SIGTERM ends it at once). The memory-pressure
relief figure (:mod:`bench.relief_figures`) starts three of them as ``backend = "command"``
recipes: idle models of mixed sizes whose exit frees a known amount.

Standalone like :mod:`bench.fake_server` (run as a script, no import of the app).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fake_server  # bench/fake_server.py, beside this file

HELD: list[bytearray] = []  # the memory this server holds until it exits


def hold(mib: int) -> None:
    """Allocates ``mib`` MiB and touches every page (calloc'd pages are not resident until written)."""
    if mib <= 0:
        return
    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    buf = bytearray(mib * 2**20)
    buf[::page] = b"\x01" * len(range(0, len(buf), page))
    HELD.append(buf)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mb", type=int, required=True, help="MiB of RAM to allocate, touch and hold")
    args = parser.parse_args()
    hold(args.mb)
    asyncio.run(fake_server._main(args.port, 16, 0.0))


if __name__ == "__main__":
    main()
