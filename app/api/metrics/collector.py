"""The metrics ``GET /metrics`` shows, read from the manager at each scrape.

Nothing is counted here: the core keeps its figures as plain data
(:class:`~app.core.metrics.recorder.Recorder`, the memory book, the remotes) and
:class:`SiestaCollector` turns what they say now into metric families. Labels stay bounded:
``model`` is a recipe's name (requests also ``remote:<REMOTE>``, ``none`` and ``other``),
``device`` a memory device (``ram``, ``gpu0``, ...), ``remote`` a configured remote.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from app import __version__
from app.core.manager import ModelManager
from app.core.metrics.counts import Histogram
from app.core.metrics.recorder import held_figures

PREFIX = "siesta_"


def _buckets(hist: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if math.isinf(bound) else repr(float(bound)), count) for bound, count in hist.cumulative()]


class SiestaCollector(Collector):
    """Every Siesta metric, from the manager's figures at the moment of the scrape."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration: the names are fixed here

    def collect(self) -> Iterator[Metric]:
        yield from self._models()
        yield from self._loads_and_unloads()
        yield from self._requests()
        yield from self._memory()
        yield from self._remotes()

    def _models(self) -> Iterator[Metric]:
        manager = self.manager
        info = GaugeMetricFamily(PREFIX + "info", "Siesta's version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        listed = manager.listed()
        loaded = GaugeMetricFamily(PREFIX + "models_loaded", "Local models whose server is running")
        loaded.add_metric([], sum(1 for m in manager.models.values() if m.process is not None))
        yield loaded
        each = GaugeMetricFamily(PREFIX + "model_loaded", "1 while the model's server is running, else 0",
                                 labels=["model"])
        in_flight = GaugeMetricFamily(PREFIX + "model_requests_in_flight",
                                      "Requests being served, per local model and per remote (model=remote:NAME)",
                                      labels=["model"])
        for model in listed:
            each.add_metric([model.name], 1 if model.process is not None else 0)
            in_flight.add_metric([model.name], model.in_flight)
        by_remote: Counter[str] = Counter()
        for snapshot in manager.remotes.snapshots():
            by_remote[snapshot.get("remote") or "?"] += int(snapshot.get("in_flight") or 0)
        for remote in manager.remotes.describe():
            in_flight.add_metric([f"remote:{remote['name']}"], by_remote.get(remote["name"], 0))
        yield each
        yield in_flight

    def _loads_and_unloads(self) -> Iterator[Metric]:
        recorder = self.manager.metrics
        loads = CounterMetricFamily(PREFIX + "loads", "Loads that ended, by result (ok, failed, cancelled)",
                                    labels=["model", "result"])
        durations = HistogramMetricFamily(PREFIX + "load_duration_seconds",
                                          "How long loads took, from loading to their end", labels=["model", "result"])
        for (model, result), hist in sorted(recorder.loads.items()):
            loads.add_metric([model, result], hist.count)
            durations.add_metric([model, result], _buckets(hist), hist.sum)
        unloads = CounterMetricFamily(PREFIX + "unloads", "Unloads of a loaded model, by reason",
                                      labels=["model", "reason"])
        for (model, reason), count in sorted(recorder.unloads.items()):
            unloads.add_metric([model, reason], count)
        given = CounterMetricFamily(
            PREFIX + "memory_given_back_byte_seconds",
            "Bytes idle and memory-pressure unloads freed, times how long they stayed free (until the next load, "
            "the recipe's removal or now), since Siesta started", labels=["model", "device"])
        for (model, device), value in sorted(recorder.given_back_run().items()):
            given.add_metric([model, device], value)
        yield from (loads, durations, unloads, given)

    def _requests(self) -> Iterator[Metric]:
        stats = self.manager.metrics.requests
        requests = CounterMetricFamily(PREFIX + "requests", "Requests answered, by model and status class",
                                       labels=["model", "status"])
        for (model, status), count in sorted(stats.counts.items()):
            requests.add_metric([model, status], count)
        first_byte = HistogramMetricFamily(PREFIX + "request_first_byte_seconds",
                                           "Time from a request's arrival to its answer's first byte (a load included)",
                                           labels=["model"])
        for model, hist in sorted(stats.first_byte.items()):
            first_byte.add_metric([model], _buckets(hist), hist.sum)
        yield requests
        yield first_byte

    def _memory(self) -> Iterator[Metric]:
        manager = self.manager
        held = GaugeMetricFamily(PREFIX + "model_memory_bytes",
                                 "What a loaded model holds per device (measured, else its estimate)",
                                 labels=["model", "device"])
        for model in sorted(manager.models.values(), key=lambda m: m.name):
            if model.process is not None:
                for device, amount in held_figures(manager.memory, model).items():
                    held.add_metric([model.name, device], amount)
        total = GaugeMetricFamily(PREFIX + "device_memory_total_bytes", "Each device's memory", labels=["device"])
        free = GaugeMetricFamily(PREFIX + "device_memory_free_bytes",
                                 "Each device's free memory (RAM: available without swapping)", labels=["device"])
        for device, state in sorted(manager.memory.last_read.items()):
            if state.total is not None:
                total.add_metric([device], state.total)
            if state.free is not None:
                free.add_metric([device], state.free)
        yield from (held, total, free)

    def _remotes(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "remote_up", "1 while the remote answers, else 0", labels=["remote"])
        for remote in self.manager.remotes.describe():
            up.add_metric([remote["name"]], 1 if remote.get("status") == "ok" else 0)
        yield up


def registry_for(manager: ModelManager) -> CollectorRegistry:
    """A registry of its own (never prometheus_client's global one) with Siesta's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SiestaCollector(manager))
    return registry


__all__ = ["SiestaCollector", "registry_for"]
