"""Where an idle tray app's CPU goes: py-spy of its main thread, five models counting down.

    python -m bench.profile_tray --llama-server BIN [--mode window|tray] [--seconds 60] [--rate 400]
    python -m bench.profile_tray --llama-server BIN --variants shipped,countdown-only,no-tick

Runs the tray app as ``python -m bench --only idle`` does (Xvfb, with trayer for ``tray``,
without a tray for ``window``, where the Models window opens), loads five copies of the
tiny model with a 1 h timeout, measures the process's CPU from schedstat over
``--seconds`` without a profiler attached, then records ``py-spy record --native
--threads`` for as long again. Only samples where a thread is not waiting (its innermost
frame is not poll, a futex or a condition wait) count; they are grouped by what they were
doing, the first matching rule of :data:`GROUPS` deciding, and the busiest frames are
listed with their inclusive share. py-spy pauses the process at every sample, so the
shares are what matters, not the absolute CPU while profiling.

``--variants`` measures instead (no profiler) the idle CPU of the Models window with the
proposed changes of :mod:`bench.tray_variant` applied, each in a fresh process, in rounds
that rotate their order.

Needs ``pip install py-spy``, Xvfb and trayer. A diagnostic, not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from .figures import LLAMA_ARGS
from .idle_figures import MODELS_WINDOW, wait_for
from .util import PROCS, Siesta, llama_recipe, new_session, task_deltas, task_stats
from .xdisplay import XServer

IDLE_LEAVES = ("poll (", "ppoll", "epoll_wait", "pthread_cond_", "futex", "__futex", "select (", "wait4",
               "sem_wait", "lock_PyThread_acquire_lock", "PyThread_acquire_lock_timed", "nanosleep")

# (group, substrings of a frame; the first rule any frame of the stack matches decides)
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("Models window, once-a-second tick: re-reading every model's snapshot (manager.snapshots)",
     ("ManagerBridge.snapshots", "ModelManager.snapshots")),
    ("Models window, once-a-second tick: updating the rows' widgets", ("ModelTableRow.update",)),
    ("Models window, once-a-second tick: fitting the columns to the widgets", ("_fit_widget_columns",)),
    ("Models window, once-a-second tick: llama-server status (file checks)", ("engine_status",)),
    ("Models window, once-a-second tick: the rest", ("ModelsWindow._tick", "ModelsWindow.refresh")),
    ("tray menu, its tick or refresh", ("TrayMenu.",)),
    ("the tray probe (is there a tray now?), every 3 s", ("_probe_tray", "isSystemTrayAvailable")),
    ("painting (Qt widgets, backing store to X)", ("paintEvent", "QWidgetRepaintManager", "QPainter", "drawControl",
                                                  "QBackingStore", "QXcbBackingStore", "QWidgetPrivate::drawWidget")),
    ("model memory readings (psutil, off the loop, and their results)", ("MemoryBook", "_rss_of")),
    ("memory-pressure watcher", ("PressureWatch", "MemoryRelief", "memory_pressure")),
    ("model countdowns and deadlines (asyncio timers)", ("Clock.", "ManagedModel.", "countdown")),
    ("other asyncio callbacks", ("Handle._run", "_SimpleTimer.timerEvent", "task_step")),
    ("X events (xcb)", ("QXcb", "xcb_")),
    ("Qt and glib dispatch, other", ("",)),
]


def _is_busy(frames: list[str]) -> bool:
    leaf = frames[-1]
    return not any(marker in leaf for marker in IDLE_LEAVES)


def analyse(raw: Path, top: int = 25) -> str:
    """The report of a ``py-spy record --format raw --threads`` file, as text."""
    groups: collections.Counter[str] = collections.Counter()
    frames_incl: collections.Counter[str] = collections.Counter()
    busy = total_main = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if not _is_busy(frames):
            continue
        if "QEventLoop::exec" not in stack and "run_forever" not in stack:
            continue  # not the main thread's loop
        total_main += n
        busy += n
        for group, needles in GROUPS:
            if any(needle in frame for frame in frames for needle in needles):
                groups[group] += n
                break
        seen = set()
        for frame in frames[1:]:
            frame = re.sub(r"0x[0-9a-f]+ ", "", frame)
            if frame not in seen:
                seen.add(frame)
                frames_incl[frame] += n
    out = [f"busy samples of the main thread (the event loop): {busy}", "",
           "by what it was doing (first matching rule):"]
    for group, n in groups.most_common():
        out.append(f"  {100 * n / max(1, busy):5.1f}%  {group}")
    out += ["", f"busiest frames, inclusive (top {top}, the loop's own frames left out):"]
    skip = ("QEventLoop::exec", "run_forever", "run_until_complete", "Runner.run", "run_tray_app", "tray_command",
            "_run_module_as_main", "_run_code", "<module>", "main (app/cli", "QCoreApplication::exec",
            "processEvents", "g_main_context", "(libglib", "(libc.so", "(libpython", "QtWidgets.abi3",
            "QtCore.abi3", "libpyside6")
    listed = 0
    for frame, n in frames_incl.most_common():
        if any(s in frame for s in skip):
            continue
        out.append(f"  {100 * n / max(1, busy):5.1f}%  {frame[:140]}")
        listed += 1
        if listed >= top:
            break
    return "\n".join(out)


async def _start(work: Path, model: Path, x: XServer, args: argparse.Namespace, session: aiohttp.ClientSession,
                 variant: str = "shipped", tag: str = "app") -> Siesta:
    """The tray app on ``x`` with five models loaded and counting down, its icon or window shown."""
    recipes = {f"idle{i}": llama_recipe(model, LLAMA_ARGS) for i in range(5)}
    app = Siesta(work / tag, recipes, llama_server=Path(args.llama_server), tray=True, env=x.env)
    if variant != "shipped":
        app.argv = [sys.executable, "-m", "bench.tray_variant", variant, *app.argv[3:]]
    await app.start(session)
    for name in recipes:
        await app.load(session, name)
    assert x.client is not None
    if x.tray:
        await wait_for(lambda: bool(x.icons()), "the tray icon docked")
    else:
        await wait_for(lambda: x.client.window_shown(MODELS_WINDOW), "the Models window shown")
    await asyncio.sleep(3.0)
    return app


async def _idle(app: Siesta, seconds: float) -> dict[str, Any]:
    before, t0 = task_stats(app.pid), time.perf_counter()
    await asyncio.sleep(seconds)
    return task_deltas(before, task_stats(app.pid), time.perf_counter() - t0)


def _describe(got: dict[str, Any]) -> str:
    return f"{got['cpu_percent']:.3f}% of a core; by thread: " + ", ".join(
        f"{k} {v:.3f}% ({got['wakeups_per_s'].get(k, 0):.1f} wake-ups/s)"
        for k, v in sorted(got["cpu_percent_by_thread"].items(), key=lambda kv: -kv[1])[:3])


async def compare(args: argparse.Namespace, work: Path, model: Path, session: aiohttp.ClientSession) -> None:
    """Idle CPU of each variant of :mod:`bench.tray_variant`, Models window open, in rounds."""
    variants = args.variants.split(",")
    got: dict[str, list[float]] = {v: [] for v in variants}
    for rnd in range(args.rounds):
        for variant in variants[rnd % len(variants):] + variants[:rnd % len(variants)]:
            x = XServer(work / f"x-{variant}-{rnd}", tray=False)
            app: Siesta | None = None
            try:
                x.start()
                app = await _start(work, model, x, args, session, variant, f"app-{variant}-{rnd}")
                result = await _idle(app, args.seconds)
            finally:
                if app is not None:
                    app.stop()
                x.stop()
            got[variant].append(result["cpu_percent"])
            print(f"round {rnd + 1}, {variant}: {_describe(result)}", flush=True)
    print("\nModels window open, five models counting down, idle CPU of the tray app (% of a core):")
    for variant, values in got.items():
        print(f"  {variant:15s} median {statistics.median(values):.3f}  ({', '.join(f'{v:.3f}' for v in values)})")


async def run(args: argparse.Namespace) -> int:
    pyspy = shutil.which("py-spy")
    if pyspy is None and not args.variants:
        print("py-spy not found: pip install py-spy", file=sys.stderr)
        return 2
    from app.demo_model import write_tiny_model

    work = Path(tempfile.mkdtemp(prefix="siesta-profile-tray-"))
    model = write_tiny_model(work / "models" / "tiny.gguf")
    session = new_session()
    x = XServer(work / "x", tray=args.mode == "tray")
    app: Siesta | None = None
    try:
        if args.variants:
            await compare(args, work, model, session)
            return 0
        assert pyspy is not None
        x.start()
        app = await _start(work, model, x, args, session, args.variant)
        got = await _idle(app, args.seconds)
        print(f"{args.mode} ({args.variant}): over {args.seconds:.0f} s without a profiler: {_describe(got)}")
        raw = work / "pyspy.txt"
        done = subprocess.run([pyspy, "record", "--native", "--threads", "--format", "raw", "--rate", str(args.rate),
                               "--duration", str(int(args.seconds)), "--pid", str(app.pid), "--output", str(raw)],
                              capture_output=True, text=True, timeout=args.seconds + 120)
        if done.returncode != 0 or not raw.exists():
            print(f"py-spy failed ({done.returncode}): {done.stderr[-2000:]}", file=sys.stderr)
            return 1
        print(analyse(raw))
        if args.keep_raw:
            target = Path(args.keep_raw)
            target.write_bytes(raw.read_bytes())
            print(f"raw samples in {target}")
    finally:
        if app is not None:
            app.stop()
        x.stop()
        await session.close()
        PROCS.kill_all()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_tray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", default=os.environ.get("SIESTA_LLAMA_SERVER"), required=not os.environ.get(
        "SIESTA_LLAMA_SERVER"))
    parser.add_argument("--mode", choices=["window", "tray"], default="window")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    parser.add_argument("--keep-raw", metavar="FILE", help="copy py-spy's raw samples here")
    parser.add_argument("--analyse", metavar="FILE", help="only print the report of an earlier raw file")
    parser.add_argument("--variant", default="shipped", help="profile this variant of bench.tray_variant")
    parser.add_argument("--variants", help="compare these variants of bench.tray_variant (comma-separated) instead")
    parser.add_argument("--rounds", type=int, default=3, help="with --variants: rounds of all variants")
    args = parser.parse_args()
    if args.analyse:
        print(analyse(Path(args.analyse)))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    raise SystemExit(main())
