"""The memory figures of docs/performance.md (``python -m bench --only memory``).

1. Idle CPU with the memory-pressure watcher on, beside the same without: ``bench.idle_probe``
   (the serve loop in one process, five copies of the tiny model loaded and counting down)
   once with ``--pressure-watch off`` and once with ``--pressure-watch on``. "On" is the
   manager's own watcher where it has one, else a stand-in beside it.
2. Pressure reaction time: a ``siesta serve`` with one idle model and ``SIESTA_FREE_MEMORY_FLOOR``
   set to the current ``MemAvailable`` minus 0.5 GiB; a helper process allocates and touches
   1 GiB; the figure is the time from the helper having touched its last page to the idle
   model's server process having exited. The helper frees its memory as soon as that is
   measured (or after 30 s); only one helper runs at a time, so the benchmark never holds more
   than 1 GiB. A Siesta that does not react within 30 s (no pressure policy) gives "not
   available" rather than a figure.

Same conventions as :mod:`bench.figures`, whose ``Ctx`` and ``Row`` these use.
``python -m bench.memory_figures --hog`` is the helper.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from .figures import LLAMA_ARGS, Ctx, Row
from .util import REPO, Siesta, child_env, llama_recipe, log_tail, median, process_gone

GIB = 2**30
HOG = GIB  # the helper's allocation, and the most this benchmark ever holds
BELOW = GIB // 2  # the floor is set this far below MemAvailable
REACT_WITHIN = 30.0  # no unload within this: the running Siesta does not react to pressure
HOG_HOLDS_AT_MOST = REACT_WITHIN + 5.0


# ---- 1. idle CPU with the watcher on and off -------------------------------------------------------


async def _idle_probe(ctx: Ctx, watch: str, seconds: float, models: int) -> dict[str, Any]:
    home = ctx.work / f"idle-watch-{watch}"
    home.mkdir(parents=True, exist_ok=True)
    log = home / "probe.log"
    argv = [sys.executable, "-m", "bench.idle_probe", "--llama-server", str(ctx.llama_server),
            "--seconds", str(seconds), "--models", str(models), "--variant", "shipped", "--home", str(home),
            "--model", str(ctx.model_file), "--pressure-watch", watch]
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=err, env=child_env(home),
                                                    cwd=str(REPO), start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + 120)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"idle probe (--pressure-watch {watch}) exited {proc.returncode}\n{log_tail(log)}")
    return json.loads(lines[-1])


async def idle_cpu_with_watcher(ctx: Ctx, models: int = 5) -> None:
    seconds = ctx.scale(60.0, 20.0)
    off = await _idle_probe(ctx, "off", seconds, models)
    on = await _idle_probe(ctx, "on", seconds, models)
    fig = f"idle CPU, {models} models loaded counting down, memory-pressure watcher"
    ctx.add(Row(fig, f"watcher {on['pressure_watch']}, PSI {on['psi']}: serve loop over {seconds:.0f} s",
                on["cpu_percent"], "% of a core",
                "watcher off", off["cpu_percent"], "delta", "< 0.1%", on["cpu_percent"] < 0.1,
                note=f"{on['pressure_watch']}; PSI trigger: {on['psi']}; {on['checks_per_s']:.2f} checks/s; "
                     f"wake-ups/s {on['wakeups_per_s']:.1f} (off: {off['wakeups_per_s']:.1f}); "
                     "bench.idle_probe, children excluded"))
    ctx.notes["memory_idle"] = {"on": on, "off": off}
    ctx.log(f"idle CPU: watcher on {on['cpu_percent']:.3f}% ({on['pressure_watch']}, PSI {on['psi']}, "
            f"{on['checks_per_s']:.2f} checks/s, {on['wakeups_per_s']:.1f} wake-ups/s), "
            f"off {off['cpu_percent']:.3f}% ({off['wakeups_per_s']:.1f} wake-ups/s)")


# ---- 2. pressure reaction time -------------------------------------------------------------------


def _mem_available() -> int | None:
    from app.core.memory.pressure import read_ram

    return read_ram().free


class _Events:
    """Siesta's event stream (``GET /api/v1/events``), each event kept with its arrival time."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.items: list[tuple[float, dict[str, Any]]] = []
        self.connected = asyncio.Event()
        self._task = asyncio.create_task(self._read(session, url))

    async def _read(self, session: aiohttp.ClientSession, url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with session.get(url + "/api/v1/events", timeout=timeout) as resp:
            self.connected.set()
            async for raw in resp.content:
                line = raw.decode(errors="replace").strip()
                if line.startswith("data:"):
                    with contextlib.suppress(ValueError):
                        self.items.append((time.monotonic(), json.loads(line[5:])))

    def first(self, model: str, reason: str) -> float | None:
        return next((t for t, e in self.items
                     if e.get("reason") == reason and (e.get("model") or {}).get("name") == model), None)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await self._task


async def _start_hog(log: Path) -> tuple[asyncio.subprocess.Process, float]:
    """Starts the helper; returns it and the monotonic time it had touched its last page."""
    with log.open("ab") as err:
        hog = await asyncio.create_subprocess_exec(sys.executable, "-m", "bench.memory_figures", "--hog",
                                                   stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                   stderr=err, cwd=str(REPO), start_new_session=True)
    assert hog.stdout is not None
    line = await asyncio.wait_for(hog.stdout.readline(), 30)
    if not line.startswith(b"allocated "):
        raise RuntimeError(f"the memory helper did not allocate: {line!r}\n{log_tail(log)}")
    return hog, float(line.split()[1])


async def _end_hog(hog: asyncio.subprocess.Process) -> None:
    """Tells the helper to free its memory and exit (closing its stdin); kills it if it lingers."""
    if hog.stdin is not None:
        hog.stdin.close()
    try:
        await asyncio.wait_for(hog.wait(), 10)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(hog.pid, signal.SIGKILL)
        await hog.wait()


def _not_available(ctx: Ctx, fig: str, why: str) -> None:
    ctx.add(Row(fig, f"helper's allocation done to the idle model's exit: not available ({why})", math.nan, "s",
                target="< 3 s", note=f"not available: {why}"))
    ctx.log(f"pressure reaction: not available: {why}")


async def pressure_reaction(ctx: Ctx) -> None:
    reps = ctx.scale(3, 1)
    fig = "memory pressure reaction (idle model; floor = MemAvailable - 0.5 GB; a helper takes 1 GiB)"
    times: list[float] = []
    event_times: list[float] = []
    reasons: list[str] = []
    disturbed = early = 0
    for rep in range(2 * reps + 2):  # repetitions disturbed by other programs are made up for, within reason
        if len(times) == reps:
            break
        available = _mem_available()
        if available is None:
            return _not_available(ctx, fig, "no MemAvailable in /proc/meminfo")
        if available < 3 * GIB:
            return _not_available(ctx, fig, f"only {available / GIB:.1f} GiB available; not run (needs 3 GiB)")
        floor = available - BELOW
        home = ctx.work / f"pressure-{rep}"
        siesta = Siesta(home, {"idle": llama_recipe(ctx.model_file, LLAMA_ARGS)}, llama_server=ctx.llama_server,
                        global_unload_timeout="1h", env={"SIESTA_FREE_MEMORY_FLOOR": f"{floor // 2**20}MB"})
        events: _Events | None = None
        hog: asyncio.subprocess.Process | None = None
        try:
            await siesta.start(ctx.session)
            health = await siesta.api(ctx.session, "GET", "/api/v1/health")
            if "free_memory_floor" not in health.get("settings", {}):
                return _not_available(ctx, fig, "this Siesta has no free_memory_floor setting")
            events = _Events(ctx.session, siesta.url)
            await asyncio.wait_for(events.connected.wait(), 10)
            pid = (await siesta.load(ctx.session, "idle"))["pid"]
            deadline = time.monotonic() + 15
            while not ((await siesta.models(ctx.session))["idle"].get("memory_by_device") or {}).get("ram"):
                if time.monotonic() > deadline:  # the policy frees only what it knows a model holds
                    raise RuntimeError("the idle model's RAM was not measured within 15 s")
                await asyncio.sleep(0.05)
            now = _mem_available() or 0
            if process_gone(pid) or not floor + BELOW // 2 <= now <= floor + HOG - BELOW // 2:
                disturbed += 1  # something else on this machine took or gave back memory meanwhile
                ctx.log(f"rep {rep + 1}: MemAvailable moved by {(now - available) / 2**20:+.0f} MiB before the "
                        f"helper ran (another program); not counted")
                continue
            hog, allocated_at = await _start_hog(home / "hog.log")
            after = _mem_available() or 0
            gone_at = None
            if process_gone(pid):  # the floor was crossed, and the model freed, before the last page
                gone_at = allocated_at
                early += 1
            samples = above = 0  # MemAvailable every 100 ms while the helper holds its 1 GiB; how often above the floor
            next_sample = 0.0
            while gone_at is None and time.monotonic() < allocated_at + REACT_WITHIN:
                if process_gone(pid):
                    gone_at = time.monotonic()
                    break
                if time.monotonic() >= next_sample:
                    samples += 1
                    above += (_mem_available() or 0) >= floor
                    next_sample = time.monotonic() + 0.1
                    if samples >= 30 and above == samples:
                        break  # 3 s and never below the floor: nothing to react to
                await asyncio.sleep(0.005)
            await _end_hog(hog)  # the 1 GiB goes back at once
            hog = None
            if gone_at is None and above > samples // 10:
                # another program gave memory back meanwhile (or this machine hands a guest memory as it
                # allocates): MemAvailable did not stay below the floor, so there was nothing to react to
                disturbed += 1
                ctx.log(f"rep {rep + 1}: no unload, MemAvailable above the floor in {above} of {samples} samples "
                        f"(before the helper {(now - floor) / 2**20:+.0f} MiB from the floor, after its allocation "
                        f"{(after - floor) / 2**20:+.0f} MiB); not counted")
                continue
            if gone_at is None:
                return _not_available(ctx, fig, f"the running Siesta did not unload the idle model within "
                                                 f"{REACT_WITHIN:.0f} s (no memory-pressure policy?)")
            times.append(gone_at - allocated_at)
            await asyncio.sleep(0.2)  # the event follows the exit
            reasons.append(((await siesta.models(ctx.session))["idle"].get("last_unload_reason")) or "?")
            seen = events.first("idle", "memory_pressure")
            if seen is not None:
                event_times.append(seen - allocated_at)
            ctx.log(f"rep {rep + 1}: idle model exited {times[-1]:.2f} s after the helper's allocation "
                    f"(reason {reasons[-1]}; memory_pressure event "
                    + (f"at {event_times[-1]:.2f} s)" if seen is not None else "not seen)"))
        finally:
            if hog is not None:
                await _end_hog(hog)
            if events is not None:
                await events.close()
            siesta.stop()
    if not times:
        return _not_available(ctx, fig, f"every repetition was disturbed by another program's memory use "
                                        f"({disturbed} attempts)")
    worst = max(times)
    note = (f"median {median(times):.2f} s of {len(times)}; unload reason {', '.join(sorted(set(reasons)))}; "
            f"memory_pressure event {'seen' if len(event_times) == len(times) else 'missing'}"
            + (f"; {early} exited while the helper was still allocating (counted as 0 s)" if early else "")
            + (f" ({disturbed} disturbed repetitions left out)" if disturbed else ""))
    ctx.add(Row(fig, f"helper's allocation done to the idle model's exit, worst of {len(times)}", worst, "s",
                target="< 3 s", ok=worst < 3.0 and all(r == "memory_pressure" for r in reasons), note=note))
    ctx.notes["memory_pressure_reaction"] = {"seconds": times, "event_seconds": event_times, "reasons": reasons,
                                             "disturbed": disturbed, "exited_during_allocation": early}


async def memory(ctx: Ctx) -> None:
    """Both figures: ``python -m bench --only memory``."""
    try:
        await idle_cpu_with_watcher(ctx)
    finally:
        await pressure_reaction(ctx)


# ---- the helper ------------------------------------------------------------------------------


def hog() -> int:
    """Allocates and touches :data:`HOG` bytes, prints ``allocated <monotonic time>``, holds them
    until stdin closes (or :data:`HOG_HOLDS_AT_MOST` seconds), then frees them and exits."""
    import select

    page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
    buf = bytearray(HOG)  # calloc: untouched pages are not resident yet
    buf[::page] = b"\x01" * len(range(0, HOG, page))  # one write per page makes every page resident
    print(f"allocated {time.monotonic():.6f}", flush=True)
    select.select([sys.stdin], [], [], HOG_HOLDS_AT_MOST)
    del buf
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--hog"]:
        raise SystemExit(hog())
    print("usage: python -m bench.memory_figures --hog   (the helper; the figures run with python -m bench "
          "--only memory)", file=sys.stderr)
    raise SystemExit(2)
