"""Pressure relief beside the old policy (``python -m bench --only relief``; issue 27, item 3).

**Setup, each episode.** A :class:`~app.core.manager.ModelManager` runs in this process
(its own temporary config, log and data dirs) with three idle ``backend = "command"`` models
whose servers (:mod:`bench.ram_server`) hold 60, 120 and 700 MiB of touched RAM (the figure
Siesta measures for each, its server's RSS, is about 14-24 MiB more: the interpreter).
They are loaded one after the other, so the first is the least recently used; which model
that is rotates over the repetitions (each is the oldest once). ``free_memory_floor`` is
then set on RAM to ``MemAvailable`` minus :data:`MARGIN`, and after :data:`FLOOR_SETTLE`
seconds (the policy has looked with the floor in force) a helper (:mod:`bench.ram_hog`)
allocates :data:`SHORT` bytes more than ``MemAvailable`` then stands above the floor (nominally
:data:`MARGIN`), 64 MiB every 50 ms (or as fast as the kernel hands pages out, if slower),
touching every page, and holds them. The floor is crossed while it is still allocating.

A thread samples ``MemAvailable`` (``/proc/meminfo``), the free pages parked in the kernel's
per-CPU lists (the ``count:`` of every pageset in ``/proc/zoneinfo``) and whether each model's
server has exited, every 10 ms. The **crossing** is the first sample with ``MemAvailable``
below the floor (what Siesta reads).

**Per-CPU free lists.** Since Linux 6.7 the per-CPU page lists tune their size to the traffic
(``high`` up to ``high_max``: about 650 MiB per CPU on this 24 GB machine). A process that
exits frees its pages into the list of the CPU it exits on, and ``MemFree``/``MemAvailable``
do not count them: when the 700 MiB server exits, ``AnonPages`` falls by 710 MiB but
``MemAvailable`` rises by only 120-350 MiB, the rest showing over the next 10-20 s as the lists
shrink back (by about an eighth a second); an allocation on that CPU takes them first, without
``MemAvailable`` moving. The bench's accounting therefore uses ``MemAvailable`` plus the
per-CPU lists' growth since just before the helper started (*true* free memory below), and
charges other programs only with what its own processes (this one, the servers and the helper:
``RssAnon`` + ``VmPTE``) do not explain; judged on ``MemAvailable`` alone, every episode that
unloaded the 700 MiB model showed 380-530 MiB of "drift" and was thrown away. Siesta now
reads ``MemAvailable`` plus the per-CPU lists on Linux (``readers/linux.py``, after this bench
showed the new policy unloading the 700 MiB model for a shortfall already covered), so the
sampler records that sum as its free figure ("MemAvailable" below means that sum), and the
lists' own column stays 0: what Siesta sees and the true figure are the same.

**Figures** (both policies, the same episodes, alternating: new, old, new, old, ...):

* *crossing to exit*: from the crossing to the exit of the first, and of the last, server the
  episode unloaded (reason ``memory_pressure``); target: the last within 1 s;
* *over-eviction*: the bytes the victims held (as Siesta measured them, what the policy
  counts) minus the **shortfall**, defined as the bytes the helper took below the floor:
  what it allocated in all minus how far above the floor ``MemAvailable`` stood just before
  it started (:data:`SHORT`, as the helper's allocation is sized). Target: at most the smallest victim's bytes. The log
  gives, for every round of unloads, the shortfall Siesta saw and the true one then (free
  pages in the per-CPU lists counted), and whether the helper was still allocating.

An episode ends :data:`SETTLE` seconds after its last exit with ``MemAvailable`` above the
floor (or every model unloaded) and nothing unloading (longer than the old policy's 1.5 s
poll), or after :data:`EPISODE_MAX` seconds. It is repeated when other programs moved free
memory by more than :data:`DRIFT` before the helper started or :data:`EPISODE_DRIFT` during
the episode (true free memory's change minus the change of the bench's own processes).
Medians of :func:`reps` valid episodes per policy; the ratio is new / old. The old policy is :class:`bench.relief_lru.LruRelief` (least recently used, one at a
time, waiting up to 5 s for 75% of each victim's memory to show as free, polling every
1.5 s), swapped into the manager in place of :class:`app.core.memory.relief.MemoryRelief`.

Memory: the models hold about 0.95 GiB and the helper at most 0.36 GiB (:data:`MARGIN` +
:data:`DRIFT` + :data:`SHORT`): about 1.35 GiB at most. Every
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
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
DRIFT = 64 * MIB  # free memory moved more than this before the helper started: repeated
EPISODE_DRIFT = 128 * MIB  # ... or more than this during the episode, unexplained by the bench's own processes
BUDGET = 95.0  # s: no episode starts after this long (the figure's run time stays under ~2 minutes)
RAM_SERVER = BENCH_DIR / "ram_server.py"
RAM_HOG = BENCH_DIR / "ram_hog.py"
POLICIES = ("new", "old")

_HOGS: set[int] = set()  # live helpers' pids (each leads its own process group)
PAGE = os.sysconf("SC_PAGE_SIZE")
_PCP_COUNT = re.compile(rb"\n\s+count:\s+(\d+)")  # /proc/zoneinfo: free pages in one CPU's list of one zone


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


def _per_cpu_free(fh: Any) -> int:
    """Bytes of free pages parked in the per-CPU lists (every zone, every CPU): free, but
    counted by neither ``MemFree`` nor ``MemAvailable``."""
    if fh is None:
        return 0
    fh.seek(0)
    return sum(map(int, _PCP_COUNT.findall(fh.readall()))) * PAGE


def _own_anon(pid: int) -> int:
    """What an exit of ``pid`` gives back: its anonymous pages and page tables (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            status = fh.read()
    except OSError:
        return 0
    total = 0
    for key in (b"RssAnon:", b"VmPTE:"):
        at = status.find(key)
        if at >= 0:
            total += int(status[at + len(key): status.index(b"\n", at)].split()[0]) * 1024
    return total


class _Sampler(threading.Thread):
    """``MemAvailable``, the per-CPU lists' free pages and which servers have exited, every
    :data:`SAMPLE_EVERY` seconds."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(name="relief-sampler", daemon=True)
        self.pids = dict(pids)
        self.samples: list[tuple[float, int, int]] = []  # (monotonic time, MemAvailable, per-CPU free) bytes
        self.gone: dict[str, float] = {}  # model -> first time its server was seen exited
        self._halt = threading.Event()

    def run(self) -> None:
        with contextlib.ExitStack() as stack:
            fh = stack.enter_context(open("/proc/meminfo", "rb", buffering=0))
            try:
                zoneinfo = stack.enter_context(open("/proc/zoneinfo", "rb", buffering=0))
            except OSError:
                zoneinfo = None
            due = time.monotonic()
            while not self._halt.is_set():
                now = time.monotonic()
                # the free figure Siesta reads (app/core/memory/readers/linux.py): MemAvailable plus
                # the per-CPU lists; so the lists' own column stays 0 and "true" equals "seen"
                self.samples.append((now, _mem_available(fh) + _per_cpu_free(zoneinfo), 0))
                for name, pid in self.pids.items():
                    if name not in self.gone and process_gone(pid):
                        self.gone[name] = now
                due += SAMPLE_EVERY
                self._halt.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def _recent(self, seconds: float) -> list[tuple[float, int, int]]:
        since = time.monotonic() - seconds
        return [s for s in self.samples[-int(seconds / SAMPLE_EVERY) - 20:] if s[0] >= since]

    def recent(self, seconds: float) -> list[int]:
        """``MemAvailable`` over the last ``seconds``."""
        return [a for _, a, _ in self._recent(seconds)]

    def recent_pcp(self, seconds: float) -> list[int]:
        """The per-CPU lists' free bytes over the last ``seconds``."""
        return [p for _, _, p in self._recent(seconds)]

    def at(self, when: float) -> tuple[int, int]:
        """(``MemAvailable``, per-CPU free) of the last sample taken at or before ``when``."""
        return next(((a, p) for t, a, p in reversed(self.samples) if t <= when), self.samples[0][1:])

    def crossing(self, floor: int, after: float) -> float | None:
        return next((t for t, a, _ in self.samples if t >= after and a < floor), None)

    def peak_pcp(self, after: float) -> int:
        return max((p for t, _, p in self.samples if t >= after), default=0)


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
    helper_total: int = 0  # bytes the helper allocated
    smallest: int = 0  # the smallest victim's bytes
    seen_over: int = 0  # MemAvailable above the floor once settled (what Siesta reads)
    true_over: int = 0  # ... with the free pages the per-CPU lists gained since the helper's start
    pcp_before: int = 0  # bytes free in the per-CPU lists just before the helper started
    pcp_peak: int = 0  # ... at most during the episode
    drift: int = 0  # free memory's change over the episode that the bench's own processes do not explain
    crossed_after: float = 0.0  # s from the helper's start to the crossing
    allocated_in: float = 0.0  # s the helper took to allocate it all
    rounds: list[dict[str, Any]] = field(default_factory=list)  # each round of unloads (see _rounds)
    choices: list[str] = field(default_factory=list)

    @property
    def needless_rounds(self) -> int:
        """Rounds taken with the helper done and true free memory at or above the floor: only
        the per-CPU lists' hidden pages made ``MemAvailable`` look short."""
        return sum(1 for r in self.rounds if not r["allocating"] and r["true_short"] <= 0 < r["seen_short"])

    @property
    def allocating_at_crossing(self) -> bool:
        return self.crossed_after < self.allocated_in

    @property
    def over(self) -> int:
        return self.freed - self.shortfall


class Disturbed(Exception):
    """Another program moved MemAvailable too much for this episode to mean anything."""


def _allocated(done: dict[str, Any], when: float) -> int:
    """Bytes the helper held at ``when`` (from its steps)."""
    return max((b for t, b in done["steps"] if t <= when), default=0)


def _rounds(lines: list[tuple[float, str]], sampler: _Sampler, floor: int, pcp_before: int,
            done: dict[str, Any], crossing: float) -> list[dict[str, Any]]:
    """Each round of unloads the policy logged: when (s from the crossing), the shortfall
    ``MemAvailable`` showed and the true one (the per-CPU lists' gain counted), and whether
    the helper was still allocating."""
    out = []
    for t, line in lines:
        if "unloading" not in line:
            continue
        seen, pcp = sampler.at(t)
        out.append({"at": t - crossing, "seen_short": floor - seen, "true_short": floor - (seen + pcp - pcp_before),
                    "allocating": t < done["done"], "line": line})
    return out


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
        hog = await _start_hog(MARGIN + DRIFT + SHORT, home / "hog.log")
        sampler = _Sampler(pids)
        sampler.start()
        await asyncio.sleep(0.3)
        floor = int(median(sampler.recent(0.2))) - MARGIN
        pcp_at_floor = int(median(sampler.recent_pcp(0.2)))
        free_at_floor = floor + MARGIN + pcp_at_floor
        own = [os.getpid(), hog.pid, *pids.values()]  # the bench's own processes
        for logger in loggers:
            logger.addHandler(words)
            levels[logger] = logger.level
            logger.setLevel(logging.INFO)
        manager._apply_setting("free_memory_floor", MemoryLimit(devices=(("ram", DeviceLimit(size=floor)),)),
                               "bench")
        await asyncio.sleep(FLOOR_SETTLE)  # the policy has looked with the floor in force (new: polls fast)
        before = int(median(sampler.recent(0.2)))
        pcp_before = int(median(sampler.recent_pcp(0.2)))
        own_before = sum(_own_anon(pid) for pid in own)
        others = before + pcp_before - free_at_floor
        if abs(others) > DRIFT:
            raise Disturbed(f"other programs moved free memory by {others / MIB:+.0f} MiB before the helper ran")
        if abs(before - floor - MARGIN) > DRIFT:
            raise Disturbed(f"MemAvailable moved {(before - floor - MARGIN) / MIB:+.0f} MiB before the helper ran "
                            f"(the per-CPU lists' free pages {(pcp_before - pcp_at_floor) / MIB:+.0f} MiB)")
        if any(m.process is None for m in manager.models.values()):
            raise Disturbed("a model was unloaded before the helper ran")
        assert hog.stdin is not None and hog.stdout is not None
        total = before - floor + SHORT  # SHORT below the floor, whatever MemAvailable did since the floor was set
        go = time.monotonic()
        hog.stdin.write(f"go {total}\n".encode())
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
                    moved = median(sampler.recent_pcp(0.3)) - pcp_before
                    raise Disturbed("MemAvailable never fell below the floor (free pages in the per-CPU lists "
                                    f"moved {moved / MIB:+.0f} MiB, other programs the rest)")
                continue
            last = max([crossing, *sampler.gone.values()])
            recent = sampler.recent(0.3)
            unloading = any(m.state.value == "unloading" for m in manager.models.values())
            loaded = any(m.process is not None for m in manager.models.values())
            if not unloading and recent and (min(recent) >= floor or not loaded) and now - last >= SETTLE:
                break
        done_line.cancel()
        end, pcp_end = int(median(sampler.recent(0.3))), int(median(sampler.recent_pcp(0.3)))
        own_end = sum(_own_anon(pid) for pid in own)
        sampler.stop()
        result.seen_over = end - floor
        result.true_over = end + pcp_end - pcp_before - floor
        result.pcp_before = pcp_before
        result.pcp_peak = sampler.peak_pcp(go)
        # free memory's change, less what the bench's own processes took (the helper) and gave back (victims)
        result.drift = (end + pcp_end) - (before + pcp_before) + (own_end - own_before)
        crossing = sampler.crossing(floor, go)
        if crossing is None or done is None:
            raise Disturbed("no crossing of the floor within the episode")
        result.crossed_after = crossing - go
        result.allocated_in = done["done"] - go
        result.shortfall = total - (before - floor)
        result.helper_total = total
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
        result.rounds = _rounds(words.lines, sampler, floor, pcp_before, done, crossing)
        result.choices = []
        for t, line in words.lines:
            seen, pcp = sampler.at(t)
            result.choices.append(
                f"{t - crossing:+.2f} s (MemAvailable {(seen - floor) / MIB:+.0f} MiB from the floor, true "
                f"{(seen + pcp - pcp_before - floor) / MIB:+.0f} MiB; helper "
                f"{_allocated(done, t) / MIB:.0f} of {total / MIB:.0f} MiB): {line}")
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


def _rounds_note(e: Episode) -> str:
    allocating = sum(r["allocating"] for r in e.rounds)
    words = f"{len(e.rounds)} round{'s' if len(e.rounds) != 1 else ''}"
    if allocating:
        words += f", {allocating} while the helper allocated"
    if e.needless_rounds:
        words += f", {e.needless_rounds} with true free memory above the floor"
    return words


async def relief(ctx: Ctx) -> None:
    """``python -m bench --only relief``."""
    names = list(SIZES)
    orders = [tuple(names[i:] + names[:i]) for i in range(len(names))]  # each model the oldest once
    n = reps(ctx)
    runs: dict[str, list[Episode]] = {p: [] for p in POLICIES}
    disturbed: list[str] = []
    ctx.log(f"shortfall = the bytes the helper takes below the floor ({_mib(SHORT)}): its allocation minus "
            f"MemAvailable's distance above the floor just before it starts (nominally {_mib(MARGIN)}); "
            f"over-eviction = bytes the victims held (Siesta's measurement) minus the shortfall; 'true' free memory "
            f"= MemAvailable + the free pages the kernel's per-CPU lists gained since the helper started")
    attempt = 0
    started = time.monotonic()
    while min(len(v) for v in runs.values()) < n and attempt < 4 * n + 4 and time.monotonic() - started < BUDGET:
        i = min(len(v) for v in runs.values())
        order = orders[i % len(orders)]
        for policy in POLICIES:
            if len(runs[policy]) > i or time.monotonic() - started >= BUDGET:
                continue
            try:
                ep = await episode(ctx, policy, order, f"{policy}-{attempt}")
            except Disturbed as why:
                disturbed.append(f"{policy}: {why}")
                ctx.log(f"{policy} (oldest {order[0]}): disturbed, repeated: {why}")
                continue
            if abs(ep.drift) > EPISODE_DRIFT:
                disturbed.append(f"{policy}: drift {ep.drift / MIB:+.0f} MiB")
                ctx.log(f"{policy} (oldest {order[0]}): disturbed, repeated: other programs moved free memory by "
                        f"{ep.drift / MIB:+.0f} MiB during the episode (unloaded {', '.join(ep.victims) or 'nothing'}; "
                        f"per-CPU lists {_mib(ep.pcp_before)} before, {_mib(ep.pcp_peak)} at most)")
                continue
            runs[policy].append(ep)
            ctx.log(f"{policy} (oldest {order[0]}): unloaded {', '.join(ep.victims) or 'nothing'} "
                    f"({_rounds_note(ep)}); crossing to first exit {ep.first_exit:.2f} s, to last exit "
                    f"{ep.reaction:.2f} s; shortfall {_mib(ep.shortfall)}, freed {_mib(ep.freed)}, over-eviction "
                    f"{_mib(ep.over)} (smallest victim {_mib(ep.smallest)}); settled {_mib(ep.seen_over)} above the "
                    f"floor by MemAvailable, {_mib(ep.true_over)} true; helper crossed the floor at "
                    f"{ep.crossed_after:.2f} s, done at {ep.allocated_in:.2f} s; per-CPU lists {_mib(ep.pcp_before)} "
                    f"before, {_mib(ep.pcp_peak)} at most; drift (other programs) {ep.drift / MIB:+.0f} MiB")
            for line in ep.choices:
                ctx.log(f"    {line}")
        attempt += 1
    new, old = runs["new"], runs["old"]
    fig = ("memory pressure relief: 3 idle models (60, 120, 700 MiB), a helper allocating in 64 MiB steps "
           f"from {_mib(MARGIN)} above the floor to {_mib(SHORT)} below it")
    extra = f" ({len(disturbed)} disturbed episodes repeated)" if disturbed else ""
    if not new or not old:
        ctx.add(Row(fig, "crossing of the floor to the victims' exit: not available", math.nan, "s",
                    target="<= 1 s", note=f"not available: valid episodes new {len(new)}, old {len(old)}; "
                                          f"{len(disturbed)} disturbed: " + "; ".join(disturbed)))
        return
    few = "" if min(len(new), len(old)) >= 3 else f" (only {len(new)} new and {len(old)} old valid episodes)"
    of = f"median of {len(new)}" + (f" (old {len(old)})" if len(old) != len(new) else "")
    t_new, t_old = median(e.reaction for e in new), median(e.reaction for e in old)
    f_new, f_old = median(e.first_exit for e in new), median(e.first_exit for e in old)
    o_new, o_old = median(e.over / MIB for e in new), median(e.over / MIB for e in old)
    within = sum(e.over <= e.smallest for e in new)
    within_old = sum(e.over <= e.smallest for e in old)
    ctx.add(Row(fig, f"crossing of the floor to the first victim's exit, {of}", f_new, "s",
                "old policy (LRU, one at a time, waits)", f_old, "ratio", "<= 1 s",
                ok=not math.isnan(f_new) and f_new <= 1.0,
                note="each: " + ", ".join(f"{e.first_exit:.2f}" for e in new) + " s; old: "
                     + ", ".join(f"{e.first_exit:.2f}" for e in old) + " s" + few))
    ctx.add(Row(fig, f"crossing of the floor to the last victim's exit, {of}", t_new, "s",
                "old policy (LRU, one at a time, waits)", t_old, "ratio", "<= 1 s",
                ok=not math.isnan(t_new) and t_new <= 1.0,
                note="each: " + ", ".join(f"{e.reaction:.2f}" for e in new) + " s; old: "
                     + ", ".join(f"{e.reaction:.2f}" for e in old) + " s; rounds of unloads: "
                     + "; ".join(_rounds_note(e) for e in new) + " (old: "
                     + "; ".join(_rounds_note(e) for e in old) + "); the oldest model rotates over the "
                     "repetitions; old = bench/relief_lru.py (polls every 1.5 s)" + few + extra))
    ctx.add(Row(fig, f"over-eviction (victims' bytes beyond the shortfall), {of}", o_new, "MiB",
                "old policy", o_old, "ratio", "<= smallest victim", ok=within == len(new),
                note=f"shortfall = helper's allocation minus MemAvailable's distance above the floor before it "
                     f"({_mib(SHORT)}); within the target in {within} of {len(new)} (old {within_old} of "
                     f"{len(old)}); each: " + ", ".join(f"{e.over / MIB:.0f}" for e in new) + " MiB (old: "
                     + ", ".join(f"{e.over / MIB:.0f}" for e in old) + " MiB); victims: "
                     + "; ".join("+".join(e.victims) or "none" for e in new) + " (old: "
                     + "; ".join("+".join(e.victims) or "none" for e in old) + "); settled above the floor, "
                     "MemAvailable / true: " + ", ".join(f"{e.seen_over / MIB:.0f}/{e.true_over / MIB:.0f}" for e in new)
                     + " MiB (old: " + ", ".join(f"{e.seen_over / MIB:.0f}/{e.true_over / MIB:.0f}" for e in old)
                     + " MiB); true = with the free pages the kernel's per-CPU lists gained, which MemAvailable "
                     "does not count" + few))
    ctx.notes["relief"] = {p: [e.__dict__ | {"over": e.over} for e in eps] for p, eps in runs.items()}
    ctx.notes["relief_disturbed"] = disturbed
    ctx.log(f"new/old: crossing to first exit {f_new:.2f} / {f_old:.2f} s = {f_new / f_old:.2f}x, to last exit "
            f"{t_new:.2f} / {t_old:.2f} s = {t_new / t_old:.2f}x; over-eviction {o_new:.0f} / {o_old:.0f} MiB = "
            + (f"{o_new / o_old:.2f}x" if o_old else "-"))
