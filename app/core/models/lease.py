"""A request's hold on a ready model: :class:`Lease`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from app.core.config.durations import NOT_GIVEN, KeepAlive
from app.core.models.backend import BackendProcess


class LeaseHolder(Protocol):
    """The model a lease holds (:class:`app.core.models.model.ManagedModel`)."""

    def _release(self, lease: Lease) -> None: ...


@dataclass(eq=False)
class Lease:
    """One request's hold on a ready model; release it exactly once when the request ends.
    While any lease of a model is held, the model is busy and never counts down."""

    model: LeaseHolder
    process: BackendProcess
    generation: int
    keep_alive: KeepAlive = NOT_GIVEN
    load_wait: float = 0.0
    """Seconds :meth:`~app.core.models.model.ManagedModel.acquire` waited for the model to be
    ready (its load, or an unload then a load); 0 when it was ready: a request's load time."""
    released: bool = field(default=False)
    upstream_failed: bool = field(default=False)

    @property
    def base_url(self) -> str:
        return self.process.base_url

    def mark_upstream_failed(self) -> None:
        """The request's connection to the server broke: a hint that the server may have crashed."""
        self.upstream_failed = True

    def release(self) -> None:
        self.model._release(self)
