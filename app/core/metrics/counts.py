"""Counters and histograms as plain data: what the API layer reads at scrape time.

A :class:`Histogram` keeps fixed buckets (never computed from the data), a sum and a count;
:class:`RequestStats` counts requests by model label and status class and times their first
byte. Labels are bounded: a model label is a recipe's name, ``remote:<REMOTE>`` or ``none``
(the API decides which; a name a request merely makes up never becomes one), and past
:data:`MAX_MODEL_LABELS` distinct labels the rest count under ``other``.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field

LOAD_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 30, 60, 120)
"""Seconds, for how long a load took."""

FIRST_BYTE_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
"""Seconds, for a request's time to its first byte (a load included, when it waited for one)."""

MAX_MODEL_LABELS = 512
"""Distinct model labels kept for requests; more count under ``other`` (recipes come and go)."""

NO_MODEL = "none"
OTHER = "other"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass
class Histogram:
    """Observations in fixed buckets: ``counts[i]`` are those up to ``buckets[i]`` and above
    the bucket before (not cumulative); ``counts[-1]`` those above the last bucket."""

    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        if not math.isfinite(value):
            return
        value = max(0.0, value)
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations up to it)`` for every bucket, ``inf`` last."""
        out, running = [], 0
        for bound, count in zip((*self.buckets, math.inf), self.counts):
            running += count
            out.append((bound, running))
        return out


def status_class(status: int) -> str:
    """``2xx``, ``4xx``, ...: the label of an HTTP status."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "5xx"


class RequestStats:
    """Requests by model label and status class, and their time to first byte by model label."""

    def __init__(self, max_labels: int = MAX_MODEL_LABELS) -> None:
        self.max_labels = max_labels
        self.counts: Counter[tuple[str, str]] = Counter()
        self.first_byte: dict[str, Histogram] = {}

    def _label(self, model: str | None) -> str:
        if not model:
            return NO_MODEL
        if model in self.first_byte or len(self.first_byte) < self.max_labels:
            return model
        return OTHER

    def observe(self, model: str | None, status: int, first_byte_seconds: float) -> None:
        label = self._label(model)
        self.counts[(label, status_class(status))] += 1
        hist = self.first_byte.get(label)
        if hist is None:
            hist = self.first_byte[label] = Histogram(FIRST_BYTE_BUCKETS)
        hist.observe(first_byte_seconds)
