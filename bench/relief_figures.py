"""Pressure relief beside the old policy (``python -m bench --only relief``; issue 27, item 3).

**Setup, each episode.** A :class:`~app.core.manager.ModelManager` runs in this process
(its own temporary config, log and data dirs) with three idle ``backend = "command"`` models
whose servers (:mod:`bench.ram_server`) hold 60, 120 and 700 MiB of touched RAM (the figure
Siesta measures for each, its server's RSS, is about 14-24 MiB more: the interpreter).
They are loaded one after the other, so the first is the least recently used; which model
that is rotates over the repetitions (each is the oldest once). ``free_memory_floor`` is
then set on RAM to ``MemAvailable`` minus :data:`MARGIN`, and after :data:`FLOOR_SETTLE`
seconds (the policy has looked with the floor in force) a helper (:mod:`bench.ram_hog`)
allocates :data:`MARGIN` + :data:`SHORT` bytes, 64 MiB every 50 ms (or as fast as the kernel
hands pages out, if slower), touching every page, and holds them. The floor is crossed while
it is still allocating.

A thread samples ``MemAvailable`` (``/proc/meminfo``) and whether each model's server has
exited every 10 ms. The **crossing** is the first sample below the floor.

**Figures** (both policies, the same episodes, alternating: new, old, new, old, ...):

* *crossing to exit*: from the crossing to the exit of the last server the episode unloaded
  (reason ``memory_pressure``);
* *over-eviction*: the bytes the victims held (as Siesta measured them, what the policy
  counts) minus the **shortfall**, defined as the bytes the helper took below the floor:
  what it allocated in all minus how far above the floor ``MemAvailable`` stood just before
  it started (nominally :data:`SHORT`). Target: at most the smallest victim's bytes. The
  note also gives the over-eviction ``MemAvailable`` shows (how far above the floor it
  settled), which other programs' use moves too.

An episode ends :data:`SETTLE` seconds after its last exit with ``MemAvailable`` above the
floor and nothing unloading (longer than the old policy's 1.5 s poll), or after
:data:`EPISODE_MAX` seconds. Medians of :func:`reps` episodes per policy; the ratio is new /
old. The old policy is :class:`bench.relief_lru.LruRelief` (least recently used, one at a
time, waiting up to 5 s for 75% of each victim's memory to show as free, polling every
1.5 s), swapped into the manager in place of :class:`app.core.memory.relief.MemoryRelief`.

Memory: the models hold about 0.95 GiB and the helper 0.3 GiB: about 1.3 GiB at most. Every
child ends in a ``finally`` (the manager's close, then a kill of any server pid left; the
helper is killed, and dies with this process in any case: see :mod:`bench.ram_hog`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .figures import Ctx, Row
from .util import BENCH_DIR, REPO, log_tail, median, process_gone

MIB = 2**20
SIZES = {"small": 60, "mid": 120, "big": 700}  # MiB of touched RAM each model's server holds
MARGIN = 192 * MIB  # the floor is set this far below MemAvailable
SHORT = 112 * MIB  # the helper takes this much below the floor (between small's and mid's RSS)
STEP = 64 * MIB  # the helper's allocation step ...
STEP_EVERY = 0.05  # ... and its period (s)
SAMPLE_EVERY = 0.01  # s between MemAvailable samples
FLOOR_SETTLE = 1.8  # s after the floor is set before the helper starts (> one slow poll, 1.5 s)
SETTLE = 1.8  # s after the last exit, above the floor, that ends an episode
EPISODE_MAX = 15.0  # s after the helper starts: the episode ends whatever happens
DRIFT = 64 * MIB  # MemAvailable moved more than this before the helper started: repeated
EPISODE_DRIFT = 128 * MIB  # ... or more than this during the episode, unexplained by the helper and victims
BUDGET = 90.0  # s: no episode is repeated after this long (the figure's run time stays under ~2 minutes)
RAM_SERVER = BENCH_DIR / "ram_server.py"
RAM_HOG = BENCH_DIR / "ram_hog.py"
POLICIES = ("new", "old")

_HOGS: set[int] = set()  # live helpers' pids (each leads its own process group)


@atexit.register
def _kill_hogs() -> None:
    for pid in list(_HOGS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def reps(ctx: Ctx) -> int:
    return ctx.scale(3, 1)


def ram_recipe(mib: int) -> str:
    cmd = [sys.executable, str(RAM_SERVER), "--port", "{port}", "--mb", str(mib)]
    return f'backend = "command"\ncommand = {json.dumps(cmd)}\nhealth_path = "/health"\n'


# ---- sampling ----------------------------------------------------------------------------------


def _mem_available(fh: Any) -> int:
    fh.seek(0)
    data = fh.read()
    at = data.index(b"MemAvailable:")
    return int(data[at + 13: data.index(b"\n", at)].split()[0]) * 1024


class _Sampler(threading.Thread):
    """``MemAvailable`` and which servers have exited, every :data:`SAMPLE_EVERY` seconds."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(name="relief-sampler", daemon=True)
        self.pids = dict(pids)
        self.samples: list[tuple[float, int]] = []  # (monotonic time, MemAvailable bytes)
        self.gone: dict[str, float] = {}  # model -> first time its server was seen exited
        self._halt = threading.Event()

    def run(self) -> None:
        with open("/proc/meminfo", "rb", buffering=0) as fh:
            due = time.monotonic()
            while not self._halt.is_set():
                now = time.monotonic()
                self.samples.append((now, _mem_available(fh)))
                for name, pid in self.pids.items():
                    if name not in self.gone and process_gone(pid):
                        self.gone[name] = now
                due += SAMPLE_EVERY
                self._halt.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def recent(self, seconds: float) -> list[int]:
        since = time.monotonic() - seconds
        return [a for t, a in self.samples[-int(seconds / SAMPLE_EVERY) - 20:] if t >= since]

    def at(self, when: float) -> int:
        """The last sample taken at or before ``when``."""
        return next((a for t, a in reversed(self.samples) if t <= when), self.samples[0][1])

    def crossing(self, floor: int, after: float) -> float | None:
        return next((t for t, a in self.samples if t >= after and a < floor), None)


class _Choices(logging.Handler):
    """The policies' own words (``memory pressure on RAM ...: unloading ...``) for the log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []  # (monotonic time, message)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.monotonic(), record.getMessage()))


# ---- one episode ---------------------------------------------------------------------------------


@dataclass
class Episode:
    policy: str
    oldest: str  # the least recently used model
    victims: list[str] = field(default_factory=list)
    reaction: float = math.nan  # s, crossing to the last victim's exit
    first_exit: float = math.nan  # s, crossing to the first victim's exit
    freed: int = 0  # bytes the victims held, as Siesta measured them
    shortfall: int = 0
    smallest: int = 0  # the smallest victim's bytes
    seen_over: int = 0  # MemAvailable above the floor once settled
    drift: int = 0  # MemAvailable's change over the episode that neither the helper nor the victims explain
    crossed_after: float = 0.0  # s from the helper's start to the crossing
    allocated_in: float = 0.0  # s the helper took to allocate it all
    choices: list[str] = field(default_factory=list)

    @property
    def allocating_at_crossing(self) -> bool:
        return self.crossed_after < self.allocated_in

    @property
    def over(self) -> int:
        return self.freed - self.shortfall


class Disturbed(Exception):
    """Another program moved MemAvailable too much for this episode to mean anything."""


async def _start_hog(total: int, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as err:
        hog = await asyncio.create_subprocess_exec(
            sys.executable, str(RAM_HOG), "--total", str(total), "--step", str(STEP), "--every", str(STEP_EVERY),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=err, cwd=str(REPO),
            start_new_session=True)
    _HOGS.add(hog.pid)
    assert hog.stdout is not None
    line = await asyncio.wait_for(hog.stdout.readline(), 20)
    if line.strip() != b"ready":
        await _end_hog(hog)
        raise RuntimeError(f"the memory helper did not start: {line!r}\n{log_tail(log)}")
    return hog


async def _end_hog(hog: asyncio.subprocess.Process) -> None:
    """Tells the helper to stop (it frees its memory and exits); kills its group if it lingers."""
    if hog.returncode is None and hog.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            hog.stdin.write(b"stop\n")
            hog.stdin.close()
    try:
        await asyncio.wait_for(hog.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(hog.pid, signal.SIGKILL)
        await hog.wait()
    _HOGS.discard(hog.pid)


def _swap_in_old_policy(manager: Any) -> None:
    """The old policy in place of today's: the watch calls its check at its fixed interval."""
    from .relief_lru import LruRelief

    old = LruRelief(lambda: list(manager.models.values()), lambda: manager.settings, manager.memory, manager.emit)
    manager._relief = old
    manager._pressure._check = old.check
    manager._pressure._interval = lambda: old.poll_interval


async def episode(ctx: Ctx, policy: str, order: tuple[str, ...], tag: str) -> Episode:
    from app.core.config.memory_limits import DeviceLimit, MemoryLimit
    from app.core.config.paths import Paths
    from app.core.config.settings import load_settings
    from app.core.manager import ModelManager

    home = ctx.work / f"relief-{tag}"
    paths = Paths(config_dir=home / "config", log_dir=home / "logs", data_dir=home / "data")
    paths.recipes_dir.mkdir(parents=True, exist_ok=True)
    for name, mib in SIZES.items():
        paths.recipe_file(name).write_text(ram_recipe(mib))
    settings = load_settings(paths.settings_file, {
        "global_unload_timeout": "1h", "max_loaded_models": 0, "memory_budget": "off", "free_memory_floor": "off",
        "stop_timeout": 3, "load_timeout": 30})
    manager = ModelManager(paths, settings, watch_files=False)
    if policy == "old":
        _swap_in_old_policy(manager)
    words = _Choices()
    loggers = [logging.getLogger(n) for n in ("app.core.memory.relief", "bench.relief_lru")]
    result = Episode(policy, order[0])
    hog: asyncio.subprocess.Process | None = None
    sampler: _Sampler | None = None
    pids: dict[str, int] = {}
    levels: dict[logging.Logger, int] = {}
    try:
        await manager.start()
        for name in order:  # the first loaded is the least recently used
            model = manager.get(name)
            await model.load()
            await manager.memory.measured(name)
            assert model.process is not None
            pids[name] = model.process.pid
            await asyncio.sleep(0.05)
        held = {name: manager.memory.held(manager.get(name), "ram").bytes for name in SIZES}
        private = {name: psutil.Process(pid).memory_full_info().uss for name, pid in pids.items()}  # what an exit frees
        hog = await _start_hog(MARGIN + SHORT, home / "hog.log")
        sampler = _Sampler(pids)
        sampler.start()
        await asyncio.sleep(0.3)
        floor = int(median(sampler.recent(0.2))) - MARGIN
        for logger in loggers:
            logger.addHandler(words)
            levels[logger] = logger.level
            logger.setLevel(logging.INFO)
        manager._apply_setting("free_memory_floor", MemoryLimit(devices=(("ram", DeviceLimit(size=floor)),)),
                               "bench")
        await asyncio.sleep(FLOOR_SETTLE)  # the policy has looked with the floor in force (new: polls fast)
        before = int(median(sampler.recent(0.2)))
        if abs(before - floor - MARGIN) > DRIFT or any(m.process is None for m in manager.models.values()):
            raise Disturbed(f"MemAvailable moved {(before - floor - MARGIN) / MIB:+.0f} MiB before the helper ran")
        assert hog.stdin is not None and hog.stdout is not None
        go = time.monotonic()
        hog.stdin.write(b"go\n")
        await hog.stdin.drain()
        done_line = asyncio.ensure_future(hog.stdout.readline())
        done: dict[str, Any] | None = None
        while time.monotonic() < go + EPISODE_MAX:
            await asyncio.sleep(0.05)
            if done is None and done_line.done():
                raw = done_line.result()
                if not raw.startswith(b"{"):
                    raise RuntimeError(f"the memory helper stopped: {raw!r}\n{log_tail(home / 'hog.log')}")
                done = json.loads(raw)
            if done is None:
                continue
            now = time.monotonic()
            crossing = sampler.crossing(floor, go)
            if crossing is None:
                if now - done["done"] > 2.0:
                    raise Disturbed("MemAvailable never fell below the floor (another program gave memory back)")
                continue
            last = max([crossing, *sampler.gone.values()])
            recent = sampler.recent(0.3)
            unloading = any(m.state.value == "unloading" for m in manager.models.values())
            if not unloading and recent and min(recent) >= floor and now - last >= SETTLE:
                break
        done_line.cancel()
        result.seen_over = int(median(sampler.recent(0.3))) - floor
        sampler.stop()
        crossing = sampler.crossing(floor, go)
        if crossing is None or done is None:
            raise Disturbed("no crossing of the floor within the episode")
        result.crossed_after = crossing - go
        result.allocated_in = done["done"] - go
        result.shortfall = (MARGIN + SHORT) - (before - floor)
        result.victims = sorted((n for n in SIZES if manager.get(n).process is None
                                 and manager.get(n).last_unload_reason == "memory_pressure"),
                                key=lambda n: sampler.gone.get(n, math.inf))
        exits = [sampler.gone[n] - crossing for n in result.victims if n in sampler.gone]
        # crossed, and nothing was seen exiting within the episode: no reaction (inf)
        result.reaction = max(exits, default=math.inf)
        result.first_exit = min(exits, default=math.inf)
        if result.victims:
            result.freed = sum(held[n] for n in result.victims)
            result.smallest = min(held[n] for n in result.victims)
        expected = before - (MARGIN + SHORT) + sum(private[n] for n in result.victims if n in sampler.gone)
        result.drift = floor + result.seen_over - expected
        result.choices = [f"{t - crossing:+.2f} s (MemAvailable {(sampler.at(t) - floor) / MIB:+.0f} MiB from the "
                          f"floor): {line}" for t, line in words.lines]
        return result
    finally:
        for logger in loggers:
            logger.removeHandler(words)
            if logger in levels:
                logger.setLevel(levels[logger])
        if sampler is not None and sampler.is_alive():
            sampler.stop()
        if hog is not None:
            await _end_hog(hog)
        await manager.close()
        for pid in pids.values():  # the manager stops its servers; make sure
            if not process_gone(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


# ---- the figure --------------------------------------------------------------------------------------


def _mib(b: float) -> str:
    return f"{b / MIB:.0f} MiB"


async def relief(ctx: Ctx) -> None:
    """``python -m bench --only relief``."""
    names = list(SIZES)
    orders = [tuple(names[i:] + names[:i]) for i in range(len(names))]  # each model the oldest once
    n = reps(ctx)
    runs: dict[str, list[Episode]] = {p: [] for p in POLICIES}
    disturbed = 0
    ctx.log(f"shortfall = the bytes the helper takes below the floor: its allocation ({_mib(MARGIN + SHORT)}) "
            f"minus MemAvailable's distance above the floor just before it starts (nominally {_mib(MARGIN)}); "
            f"over-eviction = bytes the victims held (Siesta's measurement) minus the shortfall")
    attempt = 0
    started = time.monotonic()
    while min(len(v) for v in runs.values()) < n and attempt < 2 * n + 2 and time.monotonic() - started < BUDGET:
        i = min(len(v) for v in runs.values())
        order = orders[i % len(orders)]
        for policy in POLICIES:
            if len(runs[policy]) > i:
                continue
            try:
                ep = await episode(ctx, policy, order, f"{policy}-{attempt}")
            except Disturbed as why:
                disturbed += 1
                ctx.log(f"{policy} (oldest {order[0]}): disturbed, repeated: {why}")
                continue
            ctx.log(f"{policy} (oldest {order[0]}): helper crossed the floor {ep.crossed_after:.2f} s after it "
                    f"started, had allocated it all at {ep.allocated_in:.2f} s; MemAvailable drift (other programs) "
                    f"{ep.drift / MIB:+.0f} MiB")
            if abs(ep.drift) > EPISODE_DRIFT:
                disturbed += 1
                ctx.log(f"{policy} (oldest {order[0]}): disturbed, repeated: other programs moved MemAvailable by "
                        f"{ep.drift / MIB:+.0f} MiB during the episode (unloaded {', '.join(ep.victims) or 'nothing'})")
                continue
            runs[policy].append(ep)
            ctx.log(f"{policy} (oldest {order[0]}): unloaded {', '.join(ep.victims) or 'nothing'}; crossing to "
                    f"exit {ep.reaction:.2f} s (first exit {ep.first_exit:.2f} s); shortfall {_mib(ep.shortfall)}, "
                    f"freed {_mib(ep.freed)}, over-eviction {_mib(ep.over)} (smallest victim {_mib(ep.smallest)}; "
                    f"MemAvailable settled {_mib(ep.seen_over)} above the floor)"
                    + ("; crossed while the helper allocated" if ep.allocating_at_crossing else ""))
            for line in ep.choices:
                ctx.log(f"    {line}")
        attempt += 1
    new, old = runs["new"], runs["old"]
    fig = ("memory pressure relief: 3 idle models (60, 120, 700 MiB), a helper allocating "
           f"{_mib(MARGIN + SHORT)} in 64 MiB steps from {_mib(MARGIN)} above the floor")
    if not new or not old:
        ctx.add(Row(fig, "crossing of the floor to the victims' exit: not available", math.nan, "s",
                    target="<= 1 s", note=f"not available: {disturbed} episodes disturbed by other programs"))
        return
    t_new, t_old = median(e.reaction for e in new), median(e.reaction for e in old)
    o_new, o_old = median(e.over / MIB for e in new), median(e.over / MIB for e in old)
    within = sum(e.over <= e.smallest for e in new)
    late = [e.reaction - e.first_exit for e in new if e.reaction - e.first_exit > 1.0]
    extra = f" ({disturbed} disturbed episodes repeated)" if disturbed else ""
    ctx.add(Row(fig, f"crossing of the floor to the last victim's exit, median of {len(new)}", t_new, "s",
                "old policy (LRU, one at a time, waits)" + (f", median of {len(old)}" if len(old) != len(new) else ""),
                t_old, "ratio", "<= 1 s",
                ok=not math.isnan(t_new) and t_new <= 1.0,
                note="each: " + ", ".join(f"{e.reaction:.2f}" for e in new) + " s; old: "
                     + ", ".join(f"{e.reaction:.2f}" for e in old) + " s; to the first victim's exit, median "
                     f"{median(e.first_exit for e in new):.2f} s (old {median(e.first_exit for e in old):.2f} s); "
                     f"a later round of unloads {len(late)} of {len(new)} times"
                     + (f", {median(late):.1f} s after the first" if late else "") + "; "
                     "the oldest model rotates over the "
                     "repetitions; old = bench/relief_lru.py (polls every 1.5 s)" + extra))
    ctx.add(Row(fig, f"over-eviction (victims' bytes beyond the shortfall), median of {len(new)}", o_new, "MiB",
                "old policy", o_old, "ratio", "<= smallest victim", ok=within == len(new),
                note=f"shortfall = helper's allocation minus MemAvailable's distance above the floor before it "
                     f"(nominally {_mib(SHORT)}); within the target in {within} of {len(new)}; victims: "
                     + "; ".join("+".join(e.victims) for e in new) + " (old: "
                     + "; ".join("+".join(e.victims) for e in old) + "); MemAvailable settled above the floor by "
                     + ", ".join(_mib(e.seen_over) for e in new) + " (old: "
                     + ", ".join(_mib(e.seen_over) for e in old) + ")"))
    ctx.notes["relief"] = {p: [e.__dict__ | {"over": e.over} for e in eps] for p, eps in runs.items()}
    ctx.log(f"new/old: crossing to exit {t_new:.2f} / {t_old:.2f} s = {t_new / t_old:.2f}x; over-eviction "
            f"{o_new:.0f} / {o_old:.0f} MiB = " + (f"{o_new / o_old:.2f}x" if o_old else "-"))
