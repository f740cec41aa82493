"""Event-loop lag of a running Siesta: a 10 ms repeating callback records how late it ran.

    python -m bench.gui_probe --mode tray|qasync|asyncio --config-dir DIR --port P
                              --control-port C --llama-server BIN

- ``tray``: the real desktop app (``app.ui.app.run_tray_app`` through ``app.cli.main``), on
  whatever display the environment gives it (the benchmark runs it on Xvfb with trayer, its
  icon docked and its menu closed, or on Xvfb without a tray, where it shows its Models
  window), with the probe started on its loop once it is up;
- ``qasync``: ModelManager + ApiServer alone on a qasync loop (no windows);
- ``asyncio``: ModelManager + ApiServer on plain asyncio, as ``siesta serve`` runs them.

The benchmark drives streams through ``P`` and reads the lateness from a small control
server on ``C``: ``POST /probe/reset`` clears it, ``POST /probe/dump`` returns it as JSON,
with the process's CPU time and run-queue wait since the reset (``/proc/self/schedstat``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import threading
import time
from typing import Any

from aiohttp import web

TICK = 0.010


async def start_probe(control_port: int) -> web.AppRunner:
    """Schedules the 10 ms callback on the running loop and serves its lateness."""
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    busy: list[float] = []  # CPU time this thread used between the previous tick and this one
    gc_pauses: list[float] = []
    gc_started = 0.0
    waited: list[float] = []  # time this thread sat runnable on a run queue, not running (CPU contention)
    expected = time.perf_counter() + TICK
    last_cpu = time.thread_time()
    stat_path = f"/proc/self/task/{threading.get_native_id()}/schedstat"

    def run_delay() -> float:
        try:
            with open(stat_path) as fh:
                return int(fh.read().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return 0.0

    last_delay = run_delay()
    # The process's own figures over the whole run, from /proc/self/schedstat (the main thread,
    # which runs the loop): ns on a CPU, ns runnable but waiting on a run queue.
    started: dict[str, float] = {}

    def process_stat() -> dict[str, float]:
        with open("/proc/self/schedstat") as fh:
            run, wait, _ = (int(x) for x in fh.read().split())
        return {"run_ns": run, "wait_ns": wait, "wall": time.perf_counter()}

    started.update(process_stat())

    def tick() -> None:
        nonlocal expected, last_cpu, last_delay
        now = time.perf_counter()
        cpu = time.thread_time()
        delay = run_delay()
        lateness.append(max(0.0, now - expected))
        busy.append(cpu - last_cpu)
        waited.append(delay - last_delay)
        last_cpu, last_delay = cpu, delay
        expected = now + TICK
        loop.call_later(TICK, tick)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_started
        if phase == "start":
            gc_started = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started)

    gc.callbacks.append(on_gc)
    loop.call_later(TICK, tick)

    async def reset(request: web.Request) -> web.Response:
        lateness.clear()
        busy.clear()
        waited.clear()
        gc_pauses.clear()
        started.update(process_stat())
        return web.json_response({"ok": True})

    async def dump(request: web.Request) -> web.Response:
        now = process_stat()
        run = {"seconds": now["wall"] - started["wall"], "runqueue_wait_ms": (now["wait_ns"] - started["wait_ns"]) / 1e6,
               "cpu_ms": (now["run_ns"] - started["run_ns"]) / 1e6}
        return web.json_response({"lateness": list(lateness), "busy": list(busy), "waited": list(waited),
                                  "gc": list(gc_pauses), "run": run})

    control = web.Application()
    control.add_routes([web.post("/probe/reset", reset), web.post("/probe/dump", dump)])
    runner = web.AppRunner(control, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", control_port).start()
    return runner


def run_tray(args: argparse.Namespace) -> int:
    import app.ui.app as ui
    from app.cli import main as cli_main

    original = ui.SiestaApp.run

    async def run_with_probe(self: Any) -> int:
        async def probe() -> None:
            await self.started.wait()
            await start_probe(args.control_port)

        task = asyncio.ensure_future(probe())
        try:
            return await original(self)
        finally:
            task.cancel()

    ui.SiestaApp.run = run_with_probe  # type: ignore[method-assign]
    return cli_main(["--config-dir", args.config_dir, "--port", str(args.port), "--llama-server", args.llama_server,
                     "--global-unload-timeout", "1h", "--max-loaded-models", "0"])


def run_bare(args: argparse.Namespace) -> int:
    from app.api.server import ApiServer
    from app.core.config.paths import Paths
    from app.core.config.settings import load_settings
    from app.core.manager import ModelManager

    async def run() -> None:
        paths = Paths.resolve(args.config_dir)
        settings = load_settings(paths.settings_file, {"port": args.port, "llama_server": args.llama_server,
                                                       "global_unload_timeout": "1h", "max_loaded_models": 0})
        manager = ModelManager(paths, settings)
        api = ApiServer(manager)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        await manager.start()
        await api.start()
        runner = await start_probe(args.control_port)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()
            await manager.close()
            await api.stop()

    if args.mode == "asyncio":
        asyncio.run(run())
        return 0
    from PySide6.QtWidgets import QApplication

    from app.ui.event_loop import SiestaEventLoop

    qapp = QApplication(sys.argv[:1])
    with asyncio.Runner(loop_factory=lambda: SiestaEventLoop(qapp)) as runner:
        runner.run(run())
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["tray", "qasync", "asyncio"], default="tray")
    parser.add_argument("--config-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--llama-server", required=True)
    args = parser.parse_args()
    return run_tray(args) if args.mode == "tray" else run_bare(args)


if __name__ == "__main__":
    raise SystemExit(main())
