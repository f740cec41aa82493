"""Idle CPU and memory with five models loaded and counting down (``python -m bench --only idle``).

Three Siestas idle side by side over the same minute, so that the machine's noise is the
same for all three and ``siesta serve`` is the baseline of the other two:

- ``siesta serve`` (no GUI);
- the tray app as a user runs it: on an X display (Xvfb) with a real system tray (trayer),
  its icon docked and its menu closed;
- the tray app on an X display without a tray, as on a desktop without one: it opens its
  Models window, which stays open and counts down once a second.

Each has its own five copies of the tiny model loaded with a 1 h timeout. CPU is each
Siesta process's own (its model servers excluded), summed over its threads from
/proc/PID/task/TID/schedstat in nanoseconds: psutil's ``cpu_times`` count 10 ms ticks, and
0.05% of a core over a minute is 30 ms. Memory is each Siesta process's resident set, its
model servers not counted. ``python -m bench.profile_tray`` shows where the tray app's
time goes.

Same conventions as :mod:`bench.figures`, whose ``Ctx`` and ``Row`` these use.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from .figures import LLAMA_ARGS, Ctx, Row
from .util import Siesta, llama_recipe, rss_of, task_deltas, task_stats
from .xdisplay import XServer

MODELS_WINDOW = "Siesta \u2014 Models"  # the Models window's title (app/ui/windows/models.py)


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0, interval: float = 0.005) -> float:
    """Polls ``check`` until true; returns the seconds that took (raises after ``timeout``)."""
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(interval)
    return time.perf_counter() - t0


async def idle(ctx: Ctx, desktop: bool = True, models: int = 5) -> None:
    """Idle CPU and RSS of ``siesta serve``, the tray app with its menu closed and the tray
    app with its Models window open, measured at the same time (``desktop`` False: no Xvfb or
    trayer here, ``siesta serve`` alone)."""
    seconds = ctx.scale(60.0, 20.0)
    recipes = {f"idle{i}": llama_recipe(ctx.model_file, LLAMA_ARGS) for i in range(models)}
    tray_x = XServer(ctx.work / "idle-x-tray", tray=True)
    plain_x = XServer(ctx.work / "idle-x-plain", tray=False)
    apps: dict[str, Siesta] = {}
    try:
        apps["serve"] = Siesta(ctx.work / "idle", recipes, llama_server=ctx.llama_server)
        if desktop:
            tray_x.start()
            plain_x.start()
            apps["tray"] = Siesta(ctx.work / "idle-tray", recipes, llama_server=ctx.llama_server, tray=True,
                                  env=tray_x.env)
            apps["window"] = Siesta(ctx.work / "idle-window", recipes, llama_server=ctx.llama_server, tray=True,
                                    env=plain_x.env)
        for app in apps.values():
            await app.start(ctx.session)
            for name in recipes:
                await app.load(ctx.session, name)
        if desktop:
            assert tray_x.client is not None and plain_x.client is not None
            await wait_for(lambda: bool(tray_x.icons()), "the tray app's icon docked in the tray")
            await wait_for(lambda: plain_x.client.window_shown(MODELS_WINDOW), "the Models window shown")
            if tray_x.client.window_shown(MODELS_WINDOW):
                raise RuntimeError("the tray app opened its Models window although a tray is there")
        await asyncio.sleep(2.0)
        for key, app in apps.items():
            snap = await app.models(ctx.session)
            counting = [n for n, m in snap.items() if m["unload_at"] is not None]
            if len(counting) != models:
                raise RuntimeError(f"{key}: expected {models} models counting down, got {counting}")
        before = {key: task_stats(app.pid) for key, app in apps.items()}
        t0 = time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - t0
        after = {key: task_stats(app.pid) for key, app in apps.items()}
        if desktop and (not tray_x.icons() or not plain_x.client.window_shown(MODELS_WINDOW)):
            raise RuntimeError("the tray icon or the Models window went away while idle")
        rss = {key: rss_of(app.pid) for key, app in apps.items()}
    finally:
        for app in apps.values():
            app.stop()
        tray_x.stop()
        plain_x.stop()
    got = {key: task_deltas(before[key], after[key], elapsed) for key in apps}
    ctx.notes["idle"] = {key: got[key] | {"rss": rss[key]} for key in apps}
    ctx.notes["idle_wakeups"] = {key: got[key]["wakeups_per_s"] for key in apps}
    fig = f"idle CPU, {models} models loaded counting down"
    serve = got["serve"]["cpu_percent"]
    ctx.add(Row(fig, f"`siesta serve` over {seconds:.0f} s", serve, "% of a core", target="< 0.1%", ok=serve < 0.1,
                note="children excluded; schedstat, all threads"))
    if not desktop:
        return
    for key, label, limit in (("tray", "tray app, icon in a real tray (Xvfb + trayer), menu closed", 0.1),
                              ("window", "tray app without a tray (Xvfb): Models window open", 0.2)):
        value = got[key]["cpu_percent"]
        ctx.add(Row(fig, label, value, "% of a core", "`siesta serve`, same period", serve, "delta",
                    f"< {limit:g}%", value < limit,
                    note="by thread: " + ", ".join(f"{k} {v:.3f}%" for k, v in _top(got[key]["cpu_percent_by_thread"]))))
    fig = f"memory, {models} models loaded counting down"
    for key, label in (("tray", "RSS of the tray app (real tray, menu closed)"),
                       ("window", "RSS of the tray app (Models window open)")):
        value = rss[key]["rss"]
        ctx.add(Row(fig, label, value, "MB", "`siesta serve`", rss["serve"]["rss"], "delta", "< 120 MB", value < 120,
                    note=f"anonymous {rss[key]['anon']:.0f} MB, file-backed {rss[key]['file']:.0f} MB; "
                         "model servers not counted"))
    ctx.log("idle CPU: " + ", ".join(f"{k} {v['cpu_percent']:.3f}% ({sum(v['wakeups_per_s'].values()):.1f} wake-ups/s)"
                                     for k, v in got.items())
            + "; RSS " + ", ".join(f"{k} {v['rss']:.0f} MB" for k, v in rss.items()))


def _top(values: dict[str, float], n: int = 3) -> list[tuple[str, float]]:
    return sorted(values.items(), key=lambda kv: -kv[1])[:n]
