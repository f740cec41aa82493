"""A stand-in for ``python -m app.core.engine.build`` in the install dialog's tests.

Same interface: ``--dest DIR --gpu X``; ``[ NN%] text`` lines on stderr; the installed
binary's path on stdout. What it does depends on ``--mode``:

* ``ok``: three progress steps, then writes ``DIR/llama-server`` (a shell script that
  answers ``--version``) and prints its path;
* ``fail``: two progress steps, an error line, exit 1;
* ``hang``: starts a child process (its pid on stderr as ``[  5%] child PID``), then
  sleeps, so a test can stop it and check that the whole group is gone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

VERSION = "9.9.9 (build 42, commit fake)"  # tests.ui.helpers.FAKE_VERSION (not imported: start fast)


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--gpu", default="cpu")
    parser.add_argument("--mode", choices=("ok", "fail", "hang"), default="ok")
    args = parser.parse_args()
    say(f"[  0%] building for {args.gpu}")
    if args.mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        say(f"[  5%] child {child.pid}")
        time.sleep(60)
        return 1
    for pct in (10, 50) + ((90,) if args.mode == "ok" else ()):
        time.sleep(0.05)
        say(f"[{pct:3d}%] step {pct}")
    if args.mode == "fail":
        say("CMake Error: no C++ compiler found")
        say("llama-server build failed: cmake configure failed")
        return 1
    args.dest.mkdir(parents=True, exist_ok=True)
    binary = args.dest / "llama-server"
    binary.write_text('#!/bin/sh\nif [ "$1" = "--version" ]; then\n'
                      f'  echo "version: {VERSION}" >&2\n  exit 0\nfi\nexit 1\n')
    binary.chmod(0o755)
    say(f"[100%] installed {binary}")
    print(binary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
