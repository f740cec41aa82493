"""The loaded models that may be unloaded to make room, as :mod:`app.core.memory.victims` weighs them.

A candidate is idle (no request in flight or waiting) and not kept loaded (its timeout is
not ``never``); what it holds on a device is :meth:`app.core.memory.book.MemoryBook.held`.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.core.memory.book import MemoryBook
from app.core.memory.victims import Candidate, median_load_rate
from app.core.models.model import ManagedModel


def may_go(model: ManagedModel) -> bool:
    """Whether ``model`` may be unloaded to make room: idle and not kept loaded."""
    return model.is_idle and not model.keeps_loaded


def as_candidates(models: Iterable[ManagedModel], memory: MemoryBook, device: str | None,
                  now: float) -> dict[str, tuple[ManagedModel, Candidate]]:
    """Each model by name with its figures: the bytes it holds on ``device`` (0 for None), how
    long it has been idle, and its last load's time."""
    out: dict[str, tuple[ManagedModel, Candidate]] = {}
    for model in models:
        held = memory.held(model, device).bytes if device is not None else 0
        out[model.name] = (model, Candidate(model.name, held, max(0.0, now - model.last_used),
                                            model.last_load_seconds))
    return out


def load_rate(models: Iterable[ManagedModel], memory: MemoryBook, devices: Iterable[str]) -> float | None:
    """The median load rate (bytes/s) of the loaded models whose load was timed."""
    devices = list(devices)
    return median_load_rate(
        (sum(memory.held(m, d).bytes for d in devices), m.last_load_seconds)
        for m in models if m.last_load_seconds)
