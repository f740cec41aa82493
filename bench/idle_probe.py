"""Where an idle Siesta's CPU goes: the serve loop with parts switched off, one at a time.

    python -m bench.idle_probe --llama-server BIN [--seconds 30] [--models 5]

Runs what ``siesta serve`` runs (ModelManager + ApiServer on plain asyncio) in this
process, loads ``--models`` copies of the tiny model, and measures this process's own CPU
(children excluded) over ``--seconds`` for each variant:

- ``shipped``: as ``siesta serve`` runs it;
- ``no-watcher``: without the recipe-folder watcher (watchfiles' ``awatch``);
- ``watcher-step-1s``: the watcher with ``step=1000`` ms instead of 50 ms;
- ``inotify-watcher``: the watcher replaced by a reader of a raw inotify fd on the loop
  (what docs/performance.md proposes);
- ``no-watcher-slice-30s``: no watcher, and wall-clock deadlines re-checked every 30 s
  instead of every 2 s.

Each variant runs in a fresh subprocess. This is a diagnostic, not part of ``python -m bench``.

``--pressure-watch on|off`` (with any variant) runs the memory-pressure watcher, or not: ``on``
uses the manager's own :class:`~app.core.memory.pressure.PressureWatch` where it has one, else
runs a stand-in beside the manager (a trivial check reading ``MemAvailable``); ``off`` stops
the manager's own. ``python -m bench --only memory`` compares the two.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ["shipped", "no-watcher", "watcher-step-1s", "inotify-watcher", "no-watcher-slice-30s"]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def _inotify_watch(manager) -> None:  # noqa: ANN001 - a sketch of the proposed watcher
    """Recipe/settings changes from a raw inotify fd read on the event loop: no wake-ups while idle."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    mask = 0x2 | 0x8 | 0x40 | 0x80 | 0x100 | 0x200  # MODIFY CLOSE_WRITE MOVED_FROM MOVED_TO CREATE DELETE
    for folder in (manager.paths.config_dir, manager.paths.recipes_dir):
        libc.inotify_add_watch(fd, str(folder).encode(), mask)
    loop = asyncio.get_running_loop()
    pending: set[str] = set()
    flush_handle: asyncio.TimerHandle | None = None

    def flush() -> None:
        nonlocal flush_handle
        flush_handle = None
        for raw in sorted(pending):
            path = Path(raw)
            if path.parent == manager.paths.recipes_dir:
                manager._reload_recipe_file(path)
            elif path == manager.paths.settings_file:
                manager._reload_settings_file()
        pending.clear()


    def readable() -> None:
        nonlocal flush_handle
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        pos = 0
        while pos < len(data):
            wd, _mask, _cookie, length = struct.unpack_from("iIII", data, pos)
            name = data[pos + 16: pos + 16 + length].rstrip(b"\0").decode(errors="replace")
            pos += 16 + length
            if name.endswith(".toml") and not name.startswith("."):
                pending.add(name)
        if pending and flush_handle is None:
            flush_handle = loop.call_later(0.15, flush)  # the same 150 ms debounce

    loop.add_reader(fd, readable)
    try:
        await asyncio.Event().wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _pressure_watches(manager) -> list:  # noqa: ANN001
    from app.core.memory.pressure import PressureWatch

    return [v for v in vars(manager).values() if isinstance(v, PressureWatch)]


async def _child(args: argparse.Namespace) -> dict[str, float]:
    from app.api.server import ApiServer
    from app.core.config.clock import Clock
    from app.core.config.paths import Paths
    from app.core.config.settings import load_settings
    from app.core.manager import ModelManager

    from .util import free_port, llama_recipe

    variant = args.variant
    home = Path(args.home)
    paths = Paths(config_dir=home / "config", log_dir=home / "log", data_dir=home / "data")
    paths.recipes_dir.mkdir(parents=True, exist_ok=True)
    model_file = Path(args.model)
    for i in range(args.models):
        paths.recipe_file(f"m{i}").write_text(llama_recipe(model_file, ["-t", "1", "--ctx-size", "512"]))
    settings = load_settings(paths.settings_file, {"llama_server": args.llama_server, "port": free_port(),
                                                   "global_unload_timeout": "1h", "max_loaded_models": 0})
    if variant == "watcher-step-1s":
        import watchfiles

        original = watchfiles.awatch
        watchfiles.awatch = lambda *a, **kw: original(*a, **{**kw, "step": 1000})  # type: ignore[assignment]
    clock = Clock(max_slice=30.0) if variant == "no-watcher-slice-30s" else Clock()
    watch = variant in ("shipped", "watcher-step-1s")
    manager = ModelManager(paths, settings, clock=clock, watch_files=watch)
    api = ApiServer(manager)
    await manager.start()
    extra: asyncio.Task | None = None
    if variant == "inotify-watcher":
        extra = asyncio.create_task(_inotify_watch(manager))
    await api.start()
    watches, stand_in, watching = _pressure_watches(manager), None, args.pressure_watch
    if args.pressure_watch == "off":
        for watch in watches:
            await watch.stop()
    elif args.pressure_watch == "on" and watches:
        watching = "on (the manager's own)"
    elif args.pressure_watch == "on":
        from app.core.memory.pressure import PressureWatch, read_ram

        async def check() -> None:
            read_ram()

        stand_in = PressureWatch(check, lambda: any(m.process is not None for m in manager.models.values()))
        stand_in.start()
        watches, watching = [stand_in], "on (a stand-in beside the manager)"
    try:
        for i in range(args.models):
            await manager.load(f"m{i}")
        for watch in watches:
            watch.wake()
        await asyncio.sleep(2.0)
        checks0 = sum(w.checks for w in watches)
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0, t0 = _cpu(), time.perf_counter()
        await asyncio.sleep(args.seconds)
        c1, t1 = _cpu(), time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        switches = (r1.ru_nvcsw + r1.ru_nivcsw) - (r0.ru_nvcsw + r0.ru_nivcsw)
        return {"variant": variant, "cpu_percent": 100 * (c1 - c0) / (t1 - t0), "seconds": t1 - t0,
                "pressure_watch": watching, "checks_per_s": (sum(w.checks for w in watches) - checks0) / (t1 - t0),
                "psi": next((("registered" if w.psi_registered else w.psi_unavailable) for w in watches
                             if args.pressure_watch == "on"), None),
                "wakeups_per_s": switches / (t1 - t0)}
    finally:
        if extra is not None:
            extra.cancel()
        if stand_in is not None:
            await stand_in.stop()
        await manager.close()
        await api.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llama-server", required=True)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--models", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--pressure-watch", choices=["shipped", "on", "off"], default="shipped",
                        help="run the memory-pressure watcher (on) or not (off); shipped: as the manager does")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(asyncio.run(_child(args))), flush=True)
        return 0
    from app.demo_model import write_tiny_model

    work = Path(tempfile.mkdtemp(prefix="siesta-idle-"))
    try:
        model = write_tiny_model(work / "tiny.gguf")
        for variant in args.variants.split(","):
            home = work / variant
            out = subprocess.run([sys.executable, "-m", "bench.idle_probe", "--llama-server", args.llama_server,
                                  "--seconds", str(args.seconds), "--models", str(args.models), "--variant", variant,
                                  "--home", str(home), "--model", str(model), "--pressure-watch", args.pressure_watch],
                                 capture_output=True, text=True, timeout=args.seconds + 120)
            lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
            if not lines:
                print(f"{variant}: failed\n{out.stderr[-2000:]}")
                continue
            result = json.loads(lines[-1])
            print(f"{variant:22s} {result['cpu_percent']:.3f}% of a core over {result['seconds']:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
