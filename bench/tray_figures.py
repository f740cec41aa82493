"""The tray app's figures of docs/performance.md: GUI loop lag and memory (only when app/ui/app.py exists).

Same conventions as :mod:`bench.figures`, whose ``Ctx`` and ``Row`` these use.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time

import aiohttp
import psutil

from .figures import LLAMA_ARGS, MODEL, STREAM_TOKENS, Ctx, Row, _chat_url
from .util import (
    PROCS, REPO, chat_body, child_env, free_port, llama_recipe, log_tail, median, ms, p50, p99, port_of, spawn,
    timed_stream, wait_http_ok,
)


def tray_app_exists() -> bool:
    return (REPO / "app" / "ui" / "app.py").exists()


async def _loop_lag(ctx: Ctx, mode: str, streams: int, seconds: float, *, direct: bool = False) -> list[float]:
    """Loop lag of a probe process in ``mode`` while ``streams`` streams run through it (or, with
    ``direct``, straight to its backend: the process then only ticks, which gives the floor)."""
    home = ctx.work / f"lag-{mode}"
    config = home / "config"
    (config / "recipes").mkdir(parents=True, exist_ok=True)
    (config / "recipes" / f"{MODEL}.toml").write_text(llama_recipe(ctx.model_file, LLAMA_ARGS))
    port, control_port = free_port(), free_port()
    log = home / "probe.log"
    env = child_env(home, {"QT_QPA_PLATFORM": "offscreen"})
    proc = spawn([sys.executable, "-m", "bench.gui_probe", "--mode", mode, "--config-dir", str(config),
                  "--port", str(port), "--control-port", str(control_port), "--llama-server", str(ctx.llama_server)],
                 log=log, env=env)
    url = f"http://127.0.0.1:{port}"
    control = f"http://127.0.0.1:{control_port}"
    try:
        await wait_http_ok(ctx.session, url + "/api/v1/health", 60, proc=proc, log=log)
        async with ctx.session.post(url + "/api/v1/load", json={"model": MODEL}) as resp:
            loaded = await resp.json()
        PROCS.note_descendants(proc)
        body = chat_body(MODEL, STREAM_TOKENS, stream=True)
        key = mode + ("-direct" if direct else "")
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
        info = {"cpu_percent": cpu, "tokens_per_s_per_stream": tps, "late_ticks_over_5ms": len(late),
                "busy_share_of_late_ticks": busy_share, "runqueue_share_of_late_ticks": wait_share,
                "own_lag_p99_ms": ms(p99(own)), "gc_collections": len(dumped["gc"]), "gc_max_ms": ms(gc_max),
                "gc_total_ms": ms(sum(dumped["gc"]))}
        ctx.notes.setdefault("loop_lag", {})[key] = info
        ctx.log(f"{key}: Siesta CPU {cpu:.0f}% of a core while streaming, {tps:.0f} tok/s per stream; "
                f"{len(late)} ticks >5 ms late, in those gaps the loop thread ran {100 * busy_share:.0f}% and "
                f"waited for a CPU {100 * wait_share:.0f}%; own lag p99 {ms(p99(own)):.2f} ms; "
                f"GC {len(dumped['gc'])}x, max {ms(gc_max):.1f} ms")
        return lateness
    finally:
        PROCS.stop(proc)


async def gui_loop_lag(ctx: Ctx, streams: int = 8) -> None:
    """Lateness of a 10 ms repeating callback on the tray app's loop while 8 streams run through it;
    the same on a bare qasync loop and on plain asyncio (``siesta serve``) as references."""
    seconds = ctx.scale(10.0, 2.5)
    fig = f"event-loop lag, {streams} streams running"
    floor: float | None = None
    for mode, direct, label, target in (
            ("tray", True, "tray app idle, the streams going straight to its backend", "(floor)"),
            ("tray", False, "tray app (qasync, offscreen), the streams through it", "<= 20 ms"),
            ("qasync", False, "manager + API on bare qasync", "(reference)"),
            ("asyncio", False, "manager + API on asyncio (`siesta serve`)", "(reference)")):
        key = mode + ("-direct" if direct else "")
        lateness = await _loop_lag(ctx, mode, streams, seconds, direct=direct)
        ctx.samples[f"lag_{key}"] = lateness
        value = ms(p99(lateness))
        info = ctx.notes["loop_lag"][key]
        if direct:
            floor = value
        ctx.add(Row(fig, f"10 ms timer lateness p99, {label}", value, "ms",
                    "floor" if floor is not None and not direct else "-", floor if not direct else None,
                    "delta" if floor is not None and not direct else None, target=target,
                    ok=(value <= 20.0) if key == "tray" else None,
                    note=f"p50 {ms(p50(lateness)):.2f} ms, max {ms(max(lateness)):.1f} ms, {len(lateness)} ticks; "
                         f"{100 * info['runqueue_share_of_late_ticks']:.0f}% of late gaps spent waiting for a CPU; "
                         f"lateness less run-queue wait p99 {info['own_lag_p99_ms']:.2f} ms"))
        ctx.add(Row(fig, f"lateness less run-queue wait p99, {label}", info["own_lag_p99_ms"], "ms",
                    target="(attribution)"))
        ctx.log(f"loop lag ({key}): p50 {ms(p50(lateness)):.2f} ms, p99 {value:.2f} ms, max {ms(max(lateness)):.1f} ms")


async def tray_memory(ctx: Ctx) -> None:
    home = ctx.work / "tray"
    config = home / "config"
    (config / "recipes").mkdir(parents=True, exist_ok=True)
    (config / "recipes" / f"{MODEL}.toml").write_text(llama_recipe(ctx.model_file, LLAMA_ARGS))
    port = free_port()
    log = home / "tray.log"
    env = child_env(home, {"QT_QPA_PLATFORM": "offscreen"})
    proc = spawn([sys.executable, "-m", "app", "--config-dir", str(config), "--port", str(port),
                  "--llama-server", str(ctx.llama_server)], log=log, env=env)
    try:
        await wait_http_ok(ctx.session, f"http://127.0.0.1:{port}/api/v1/health", 60, proc=proc, log=log)
        await asyncio.sleep(2.0)
        rss = psutil.Process(proc.pid).memory_info().rss
    finally:
        PROCS.stop(proc)
    ctx.add(Row("memory with the tray up", "RSS of the Siesta process", rss / 2**20, "MB", target="<= 120 MB",
                ok=rss / 2**20 <= 120, note="QT_QPA_PLATFORM=offscreen, no model loaded"))
