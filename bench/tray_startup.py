"""Start-up of the tray app (``python -m bench --only traystart``): from launch to what the user sees.

With a tray (Xvfb + trayer, see :mod:`bench.xdisplay`): from spawning ``python -m app`` to
its icon docked in trayer's panel and mapped. Without a tray (Xvfb alone): to its Models
window mapped. Each with 10 and with 1,000 recipe files. The baseline, launched the same
way on the same display in the same rounds, is :mod:`bench.qt_floor`: a bare PySide6
program that only shows a tray icon or a window, so the difference is Siesta's own
start-up (imports, settings, recipes, the manager and the front door, the menu or window).

Each variant is launched once unmeasured first (the page cache, Python's bytecode cache),
then ``reps`` times, the order rotating every round; the X display is polled every 5 ms.
Same conventions as :mod:`bench.figures`, whose ``Ctx`` and ``Row`` these use.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from .figures import LLAMA_ARGS, Ctx, Row
from .idle_figures import MODELS_WINDOW
from .qt_floor import WINDOW_TITLE
from .util import PROCS, Siesta, child_env, llama_recipe, log_tail, median, ms, spawn
from .xdisplay import XServer


def _launch(argv: list[str], env: dict[str, str], log: Path, shown: Callable[[], bool], x: XServer) -> float:
    """Seconds from spawning ``argv`` to ``shown()``; the process is stopped afterwards."""
    if x.tray:
        x.wait_no_icons()
    t0 = time.perf_counter()
    proc = spawn(argv, log=log, env=env)
    try:
        while not shown():
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[2]} exited with {proc.returncode} before it showed\n{log_tail(log)}")
            if time.perf_counter() - t0 > 60:
                raise RuntimeError(f"{argv[2]} did not show within 60 s\n{log_tail(log)}")
            time.sleep(0.005)
        return time.perf_counter() - t0
    finally:
        PROCS.stop(proc)


async def tray_startup(ctx: Ctx) -> None:
    reps = ctx.scale(3, 1)
    tray_x = XServer(ctx.work / "start-x-tray", tray=True)
    plain_x = XServer(ctx.work / "start-x-plain", tray=False)
    try:
        tray_x.start()
        plain_x.start()
        assert plain_x.client is not None
        floor_env = {"tray": child_env(ctx.work / "start-floor-tray", tray_x.env),
                     "window": child_env(ctx.work / "start-floor-window", plain_x.env)}
        for count, limit in ((10, 1.0), (1000, 2.0)):
            texts = {f"m{i:04d}": llama_recipe(ctx.model_file, LLAMA_ARGS) for i in range(count)}
            apps = {"tray": Siesta(ctx.work / f"start-{count}-tray", texts, llama_server=ctx.llama_server, tray=True,
                                   env=tray_x.env),
                    "window": Siesta(ctx.work / f"start-{count}-window", texts, llama_server=ctx.llama_server,
                                     tray=True, env=plain_x.env)}
            runs: dict[str, tuple[list[str], dict[str, str], Path, Callable[[], bool], XServer]] = {
                "tray": (apps["tray"].argv, apps["tray"].env, apps["tray"].log, lambda: bool(tray_x.icons()), tray_x),
                "window": (apps["window"].argv, apps["window"].env, apps["window"].log,
                           lambda: plain_x.client.window_shown(MODELS_WINDOW), plain_x),
                "floor-tray": ([sys.executable, "-m", "bench.qt_floor", "tray"], floor_env["tray"],
                               ctx.work / "start-floor-tray.log", lambda: bool(tray_x.icons()), tray_x),
                "floor-window": ([sys.executable, "-m", "bench.qt_floor", "window"], floor_env["window"],
                                 ctx.work / "start-floor-window.log", lambda: plain_x.client.window_shown(WINDOW_TITLE),
                                 plain_x),
            }
            times: dict[str, list[float]] = {key: [] for key in runs}
            for key, run in runs.items():
                _launch(*run)  # unmeasured: page cache, bytecode cache, the recipes' first read
            keys = list(runs)
            for rep in range(reps):
                for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
                    times[key].append(_launch(*runs[key]))
            ctx.notes.setdefault("tray_startup", {})[count] = times
            fig = f"tray app start-up, {count} recipe files"
            for key, label, floor_label in (("tray", "launch to the icon docked in a real tray (Xvfb + trayer)",
                                             "bare PySide6 tray icon"),
                                            ("window", "launch to the Models window shown, no tray (Xvfb)",
                                             "bare PySide6 window")):
                value, floor = median(times[key]), median(times[f"floor-{key}"])
                ctx.add(Row(fig, f"{label}, median of {reps}", ms(value), "ms", floor_label, ms(floor), "delta",
                            f"<= {ms(limit):.0f} ms", value <= limit,
                            note=f"worst {ms(max(times[key])):.0f} ms; floor worst {ms(max(times[f'floor-{key}'])):.0f} ms"))
            ctx.log(f"start-up, {count} recipes: " + ", ".join(f"{k} {ms(median(v)):.0f} ms" for k, v in times.items()))
    finally:
        tray_x.stop()
        plain_x.stop()
