"""Which idle models to unload when memory or a slot is needed: the cheapest set that covers it.

One pure function, :func:`choose`, used by giving memory back under pressure
(:mod:`app.core.memory.relief`) and by admission (:mod:`app.core.memory.admission`, for
memory and for ``max_loaded_models``). Its candidates are the idle models that may go
(never a busy one, never one whose timeout is ``never``: the callers filter them), each with
the bytes it holds on the short device.

**Cost.** Unloading a model costs what bringing it back would cost, discounted by how
unlikely that is soon: ``reload_s * exp(-idle_s / TAU) + UNLOAD_COST``, where ``reload_s``
is its last load's time, else its bytes at the median load rate seen so far, else its bytes
at :data:`DEFAULT_LOAD_RATE`, and ``idle_s`` is how long it has been idle. A model idle for
an hour costs about its unload alone; one used a minute ago costs nearly its reload.

**Choice.** The cheapest set whose bytes cover the shortfall (and whose size covers the
slots needed); among sets whose costs are within :data:`TIE` of the cheapest, the one that
frees the fewest bytes beyond it, then the one idle longest (least recently used).
Exact (every subset) up to :data:`EXACT_LIMIT` candidates; beyond, greedy by cost per byte,
then every victim the rest already covers without is dropped. When no set covers, every
candidate goes: each freed byte still helps.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

TAU = 600.0  # s: after ten idle minutes a reload is a third as likely to be needed soon
UNLOAD_COST = 1.0  # s per unload: a victim that frees nothing useful is never free to take
DEFAULT_LOAD_RATE = 1e9  # bytes/s, before any load was timed: a GGUF from a warm SSD cache
EXACT_LIMIT = 12  # 4,096 subsets: well under a millisecond
TIE = 0.25  # s: costs this close are the same (a load's time varies by more from run to run)


@dataclass(frozen=True)
class Candidate:
    """An idle model that may be unloaded: what it holds on the short device, how long it has
    been idle, and how long its last load took (None: never timed)."""

    name: str
    bytes: int
    idle_s: float
    load_s: float | None = None


@dataclass(frozen=True)
class Choice:
    """The victims (cheapest first) and the candidates kept; ``covers``: whether the victims'
    bytes and count meet what was needed."""

    victims: tuple[Candidate, ...]
    kept: tuple[Candidate, ...]
    covers: bool
    cost: float

    @property
    def freed(self) -> int:
        return sum(v.bytes for v in self.victims)


def reload_seconds(candidate: Candidate, load_rate: float | None = None) -> float:
    """How long bringing ``candidate`` back would take: its last load's time, else its bytes at
    ``load_rate`` (bytes/s; the median seen so far), else at :data:`DEFAULT_LOAD_RATE`."""
    if candidate.load_s is not None and candidate.load_s >= 0:
        return candidate.load_s
    rate = load_rate if load_rate and load_rate > 0 else DEFAULT_LOAD_RATE
    return candidate.bytes / rate


def cost(candidate: Candidate, load_rate: float | None = None) -> float:
    """The cost of unloading ``candidate``, in seconds (see the module's docstring)."""
    return reload_seconds(candidate, load_rate) * math.exp(-max(0.0, candidate.idle_s) / TAU) + UNLOAD_COST


def median_load_rate(loads: Iterable[tuple[int, float]]) -> float | None:
    """The median of bytes/seconds over ``(bytes, seconds)`` of the loads seen; None without one."""
    rates = [b / s for b, s in loads if b > 0 and s > 0]
    return statistics.median(rates) if rates else None


def choose(candidates: Sequence[Candidate], need_bytes: int = 0, need_count: int = 0,
           load_rate: float | None = None) -> Choice:
    """The cheapest set of ``candidates`` that frees at least ``need_bytes`` and counts at least
    ``need_count`` models (every candidate when none does; nothing when nothing is needed)."""
    need_bytes = max(0, need_bytes)
    need_count = max(0, need_count)
    pool = sorted(candidates, key=lambda c: (c.name, c.bytes))  # a stable order: ties break by name
    costs = [cost(c, load_rate) for c in pool]
    if need_bytes == 0 and need_count == 0:
        return Choice((), tuple(pool), True, 0.0)
    if sum(c.bytes for c in pool) < need_bytes or len(pool) < need_count:
        return _choice(pool, costs, set(range(len(pool))), covers=False)
    picked = _exact(pool, costs, need_bytes, need_count) if len(pool) <= EXACT_LIMIT else \
        _greedy(pool, costs, need_bytes, need_count)
    return _choice(pool, costs, picked, covers=True)


def _choice(pool: list[Candidate], costs: list[float], picked: set[int], *, covers: bool) -> Choice:
    order = sorted(picked, key=lambda i: (costs[i], pool[i].name))
    return Choice(tuple(pool[i] for i in order), tuple(c for i, c in enumerate(pool) if i not in picked),
                  covers, sum(costs[i] for i in picked))


def _exact(pool: list[Candidate], costs: list[float], need_bytes: int, need_count: int) -> set[int]:
    n = len(pool)
    size = 1 << n
    freed = [0] * size
    spent = [0.0] * size
    count = [0] * size
    idle = [0.0] * size
    covers: list[int] = []
    for mask in range(1, size):
        low = mask & -mask
        i = low.bit_length() - 1
        rest = mask ^ low
        freed[mask] = freed[rest] + pool[i].bytes
        spent[mask] = spent[rest] + costs[i]
        count[mask] = count[rest] + 1
        idle[mask] = idle[rest] + pool[i].idle_s
        if freed[mask] >= need_bytes and count[mask] >= need_count:
            covers.append(mask)
    cheapest = min(spent[m] for m in covers)  # the whole pool covers (checked by the caller)
    # within TIE of the cheapest, a set is as good: the fewest bytes beyond the need, then the
    # longest idle (least recently used), then the cheaper
    best = min((m for m in covers if spent[m] <= cheapest + TIE),
               key=lambda m: (freed[m] - need_bytes, -idle[m], spent[m], m))
    return {i for i in range(n) if best >> i & 1}


def _greedy(pool: list[Candidate], costs: list[float], need_bytes: int, need_count: int) -> set[int]:
    def per_byte(i: int) -> float:
        return costs[i] / pool[i].bytes if pool[i].bytes > 0 else math.inf

    # slots first by cost alone, then bytes by cost per byte
    order = sorted(range(len(pool)), key=lambda i: (per_byte(i) if need_bytes else costs[i], pool[i].name))
    picked: list[int] = []
    freed = 0
    for i in order:
        if freed >= need_bytes and len(picked) >= need_count:
            break
        picked.append(i)
        freed += pool[i].bytes
    for i in sorted(picked, key=lambda i: -costs[i]):  # drop what the rest covers without
        if freed - pool[i].bytes >= need_bytes and len(picked) - 1 >= need_count:
            picked.remove(i)
            freed -= pool[i].bytes
    return set(picked)
