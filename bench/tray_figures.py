"""The tray app's figures of docs/performance.md: event-loop lag and memory (only when app/ui/app.py exists).

The tray app runs as a user runs it: on an X display (Xvfb) with a real system tray
(trayer), its icon docked and its menu closed; and, where said, on a display without a
tray, where it opens its Models window (see :mod:`bench.xdisplay`). Same conventions as
:mod:`bench.figures`, whose ``Ctx`` and ``Row`` these use.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Any

import aiohttp
import psutil

from .figures import LLAMA_ARGS, MODEL, Ctx, Row, _chat_url
from .idle_figures import MODELS_WINDOW, wait_for
from .stream_figures import STREAM_TOKENS
from .util import (
    PROCS,
    REPO,
    Siesta,
    chat_body,
    child_env,
    free_port,
    llama_recipe,
    log_tail,
    median,
    ms,
    p50,
    p99,
    port_of,
    rss_of,
    spawn,
    timed_stream,
    wait_http_ok,
)
from .xdisplay import XServer


def tray_app_exists() -> bool:
    return (REPO / "app" / "ui" / "app.py").exists()


async def _loop_lag(ctx: Ctx, mode: str, streams: int, seconds: float, *, direct: bool = False,
                    x: XServer | None = None, key: str = "", run: int = 0) -> dict[str, Any]:
    """Loop lag of a probe process in ``mode`` while ``streams`` streams run through it (or, with
    ``direct``, straight to its backend: the process then only ticks, which gives the floor).
    On display ``x``, or on Qt's offscreen platform without one."""
    home = ctx.work / f"lag-{key}-{run}"
    config = home / "config"
    (config / "recipes").mkdir(parents=True, exist_ok=True)
    (config / "recipes" / f"{MODEL}.toml").write_text(llama_recipe(ctx.model_file, LLAMA_ARGS))
    port, control_port = free_port(), free_port()
    log = home / "probe.log"
    env = child_env(home, x.env if x is not None else {"QT_QPA_PLATFORM": "offscreen"})
    proc = spawn([sys.executable, "-m", "bench.gui_probe", "--mode", mode, "--config-dir", str(config),
                  "--port", str(port), "--control-port", str(control_port), "--llama-server", str(ctx.llama_server)],
                 log=log, env=env)
    url = f"http://127.0.0.1:{port}"
    control = f"http://127.0.0.1:{control_port}"
    try:
        await wait_http_ok(ctx.session, url + "/api/v1/health", 60, proc=proc, log=log)
        if x is not None and x.tray:
            await wait_for(lambda: bool(x.icons()), "the tray icon docked")
        elif x is not None:
            assert x.client is not None
            await wait_for(lambda: x.client.window_shown(MODELS_WINDOW), "the Models window shown")
        async with ctx.session.post(url + "/api/v1/load", json={"model": MODEL}) as resp:
            loaded = await resp.json()
        PROCS.note_descendants(proc)
        body = chat_body(MODEL, STREAM_TOKENS, stream=True)
        if direct:
            url = f"http://127.0.0.1:{port_of(loaded['pid'])}"
        deadline = time.perf_counter() + 30
        while True:  # the probe starts once the app is up
            try:
                async with ctx.session.post(control + "/probe/reset") as resp:
                    await resp.read()
                    break
            except aiohttp.ClientConnectionError:
                if time.perf_counter() > deadline:
                    raise RuntimeError("the loop-lag probe did not start\n" + log_tail(log))
                await asyncio.sleep(0.05)
        await asyncio.gather(*(timed_stream(ctx.session, _chat_url(url), body) for _ in range(streams)))
        async with ctx.session.post(control + "/probe/reset") as resp:
            await resp.read()
        ps = psutil.Process(proc.pid)
        c0, t0 = ps.cpu_times(), time.perf_counter()
        results = []
        stop = time.perf_counter() + seconds
        while time.perf_counter() < stop:
            results += await asyncio.gather(*(timed_stream(ctx.session, _chat_url(url), body) for _ in range(streams)))
        c1, t1 = ps.cpu_times(), time.perf_counter()
        async with ctx.session.post(control + "/probe/dump") as resp:
            dumped = await resp.json()
    finally:
        PROCS.stop(proc)
        if x is not None and x.tray:
            x.wait_no_icons()
    lateness = dumped["lateness"]
    cpu = 100 * ((c1.user - c0.user) + (c1.system - c0.system)) / (t1 - t0)
    tps = median(r["tps"] for r in results if not math.isnan(r["tps"]))
    # For each late tick, how much of the gap the loop's thread spent waiting on a run queue
    # (runnable, but the CPUs were busy with other processes) and how much running (its own
    # work: callbacks, Qt, GC); "own lag" = lateness less the run-queue wait.
    late = [(l, b, w) for l, b, w in zip(lateness, dumped["busy"], dumped["waited"]) if l > 0.005]
    busy_share = median(min(1.0, b / (l + 0.010)) for l, b, w in late) if late else 0.0
    wait_share = median(min(1.0, w / (l + 0.010)) for l, b, w in late) if late else 0.0
    own = [max(0.0, l - w) for l, w in zip(lateness, dumped["waited"])]
    gc_max = max(dumped["gc"], default=0.0)
    info = {"p99_ms": ms(p99(lateness)), "p50_ms": ms(p50(lateness)), "max_ms": ms(max(lateness)),
            "ticks": len(lateness), "cpu_percent": cpu, "tokens_per_s_per_stream": tps,
            "late_ticks_over_5ms": len(late), "busy_share_of_late_ticks": busy_share,
            "runqueue_share_of_late_ticks": wait_share, "own_lag_p99_ms": ms(p99(own)),
            "gc_collections": len(dumped["gc"]), "gc_max_ms": ms(gc_max), "gc_total_ms": ms(sum(dumped["gc"])),
            "run_seconds": dumped["run"]["seconds"], "runqueue_wait_ms": dumped["run"]["runqueue_wait_ms"],
            "loop_thread_cpu_ms": dumped["run"]["cpu_ms"]}
    ctx.log(f"{key} run {run + 1}: p99 {info['p99_ms']:.2f} ms (max {info['max_ms']:.1f}), run-queue wait "
            f"{info['runqueue_wait_ms']:.0f} ms over {info['run_seconds']:.1f} s; Siesta CPU {cpu:.0f}% of a core, "
            f"{tps:.0f} tok/s per stream; {len(late)} ticks >5 ms late (ran {100 * busy_share:.0f}%, waited "
            f"{100 * wait_share:.0f}% of those gaps); own lag p99 {ms(p99(own)):.2f} ms; GC {len(dumped['gc'])}x, "
            f"max {ms(gc_max):.1f} ms")
    return info


LAG_VARIANTS = [
    ("tray", "tray app, icon in a real tray (Xvfb + trayer), menu closed, the streams through it", True),
    ("window", "tray app without a tray (Xvfb), Models window open, the streams through it", False),
]


async def gui_loop_lag(ctx: Ctx, streams: int = 8) -> None:
    """Lateness of a 10 ms repeating callback on the tray app's loop while 8 streams run through it:
    at least five runs each with a real tray and with the Models window open (interleaved), the
    median run and the worst reported with the loop thread's run-queue wait over that run; a
    floor (the tray app idle while the same streams go straight to its backend) and bare qasync
    and plain asyncio (``siesta serve``) as references, one run each."""
    seconds = ctx.scale(10.0, 2.5)
    runs = ctx.scale(5, 2)
    fig = f"event-loop lag, {streams} streams running"
    tray_x = XServer(ctx.work / "lag-x-tray", tray=True)
    plain_x = XServer(ctx.work / "lag-x-plain", tray=False)
    infos: dict[str, list[dict[str, Any]]] = {key: [] for key, _, _ in LAG_VARIANTS}
    try:
        tray_x.start()
        plain_x.start()
        floor = await _loop_lag(ctx, "tray", streams, seconds, direct=True, x=tray_x, key="floor")
        for run in range(runs):
            for key, _, tray in (LAG_VARIANTS if run % 2 == 0 else LAG_VARIANTS[::-1]):
                infos[key].append(await _loop_lag(ctx, "tray", streams, seconds, x=tray_x if tray else plain_x,
                                                  key=key, run=run))
    finally:
        tray_x.stop()
        plain_x.stop()
    refs = {mode: await _loop_lag(ctx, mode, streams, seconds, key=mode) for mode in ("qasync", "asyncio")}
    ctx.notes["loop_lag"] = {"floor": floor, **{f"{k} run {i + 1}": v for k, runs_ in infos.items()
                                                for i, v in enumerate(runs_)}, **refs}

    def wait_label(info: dict[str, Any]) -> str:
        return f"run-queue wait over that {info['run_seconds']:.0f} s run"

    ctx.add(Row(fig, "10 ms timer lateness p99, floor: tray app (real tray) idle, the streams straight to its backend",
                floor["p99_ms"], "ms", wait_label(floor), floor["runqueue_wait_ms"], target="(floor)",
                note=f"own lag p99 {floor['own_lag_p99_ms']:.2f} ms"))
    for key, label, _ in LAG_VARIANTS:
        ordered = sorted(infos[key], key=lambda i: i["p99_ms"])
        mid, worst = ordered[(len(ordered) - 1) // 2], ordered[-1]
        all_p99 = ", ".join(f"{i['p99_ms']:.1f}" for i in infos[key])
        ctx.add(Row(fig, f"10 ms timer lateness p99, median of {len(ordered)} runs, {label}", mid["p99_ms"], "ms",
                    wait_label(mid), mid["runqueue_wait_ms"], target="<= 20 ms", ok=mid["p99_ms"] <= 20.0,
                    note=f"p99 of each run (ms, in run order): {all_p99}"))
        ctx.add(Row(fig, f"10 ms timer lateness p99, worst of {len(ordered)} runs, {label}", worst["p99_ms"], "ms",
                    wait_label(worst), worst["runqueue_wait_ms"], target="(explained below)"))
        ctx.add(Row(fig, f"lateness less run-queue wait p99, worst run, {label}", worst["own_lag_p99_ms"], "ms",
                    target="(attribution)",
                    note=f"{100 * worst['runqueue_share_of_late_ticks']:.0f}% of the late gaps spent waiting for a CPU"))
    for mode, label in (("qasync", "manager + API on bare qasync (offscreen)"),
                        ("asyncio", "manager + API on asyncio (`siesta serve`)")):
        info = refs[mode]
        ctx.add(Row(fig, f"10 ms timer lateness p99, one run, {label}", info["p99_ms"], "ms", wait_label(info),
                    info["runqueue_wait_ms"], target="(reference)",
                    note=f"own lag p99 {info['own_lag_p99_ms']:.2f} ms"))


async def tray_memory(ctx: Ctx) -> None:
    """RSS of the tray app with a real tray and one model loaded, beside ``siesta serve`` with the
    same model loaded and a bare PySide6 tray icon (Qt's own share), all running at once."""
    recipes = {MODEL: llama_recipe(ctx.model_file, LLAMA_ARGS)}
    x = XServer(ctx.work / "mem-x-tray", tray=True).start()
    serve = Siesta(ctx.work / "mem-serve", recipes, llama_server=ctx.llama_server)
    tray = Siesta(ctx.work / "mem-tray", recipes, llama_server=ctx.llama_server, tray=True, env=x.env)
    bare = None
    try:
        await tray.start(ctx.session)
        await wait_for(lambda: bool(x.icons()), "the tray app's icon docked")
        await serve.start(ctx.session)
        for app in (tray, serve):
            await app.load(ctx.session, MODEL)
        bare = spawn([sys.executable, "-m", "bench.qt_floor", "tray"], log=ctx.work / "mem-bare.log",
                     env=child_env(ctx.work / "mem-bare", x.env))
        await wait_for(lambda: len(x.icons()) >= 2, "the bare tray icon docked")
        await asyncio.sleep(3.0)  # the first memory reading of the model, the menu's first refresh
        if x.client is not None and x.client.window_shown(MODELS_WINDOW):
            raise RuntimeError("the tray app opened its Models window although a tray is there")
        got = {"tray": rss_of(tray.pid), "serve": rss_of(serve.pid), "bare": rss_of(bare.pid)}
    finally:
        if bare is not None:
            PROCS.stop(bare)
        tray.stop()
        serve.stop()
        x.stop()
    ctx.notes["tray_memory"] = got
    fig = "memory, tray app with a real tray (Xvfb + trayer), one model loaded"
    t, s, b = got["tray"], got["serve"], got["bare"]
    ctx.add(Row(fig, "RSS of the Siesta process (its model server not counted)", t["rss"], "MB",
                "`siesta serve`, same model loaded", s["rss"], "delta", "<= 120 MB", t["rss"] <= 120,
                note=f"anonymous {t['anon']:.0f} MB, file-backed {t['file']:.0f} MB"))
    ctx.add(Row(fig, "RSS of a bare PySide6 tray icon (python, Qt, nothing else)", b["rss"], "MB", target="(reference)",
                note=f"anonymous {b['anon']:.0f} MB, file-backed {b['file']:.0f} MB"))
    ctx.log(f"RSS: tray app {t['rss']:.0f} MB (anon {t['anon']:.0f}), serve {s['rss']:.0f} MB, bare PySide6 tray "
            f"{b['rss']:.0f} MB")
