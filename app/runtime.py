"""One running Siesta: the parts that ``siesta serve`` and the tray app both run, built,
started and stopped in one place.

:class:`SiestaRuntime` is an async context manager. Entering it starts the model
manager (which reads the recipes and starts the config watcher and the preloads), then
the HTTP front door; leaving it stops them in reverse: every model is unloaded first,
while the front door still answers (its requests in flight end with the models), then the
listening socket closes. If the front door cannot start (the port is taken), the manager
is closed again before the error leaves, so no child process or task outlives it.

Before either kind builds one, it takes its port with :func:`hold_port` and holds it for the
life of the process: one Siesta per port on every OS, so a second one, of either kind, says
"Siesta is already running on 127.0.0.1:8777 (pid N)" and exits 1 before it starts anything.

The UI builds one of these and never imports :mod:`app.api` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

from app import __version__
from app.api.server import ApiServer, PortInUse
from app.core.config.instance_lock import AlreadyRunning, InstanceLock
from app.core.config.paths import Paths
from app.core.config.settings import LoadedSettings
from app.core.manager import ModelManager

log = logging.getLogger(__name__)

ManagerFactory = Callable[[Paths, LoadedSettings], ModelManager]

__all__ = ["SiestaRuntime", "PortInUse", "ManagerFactory", "hold_port"]


def hold_port(paths: Paths, settings: LoadedSettings, kind: str) -> InstanceLock | None:
    """Takes the lock on the settings' port for ``kind`` (``"serve"`` or ``"tray"``), to be held
    until the process ends. Raises :class:`PortInUse` naming the Siesta that holds it, in the
    words of the bind's own refusal; None (and a warning) when no lock file can be written."""
    values = settings.values
    try:
        return InstanceLock(values.port).acquire(kind=kind, host=values.host, config_dir=paths.config_dir)
    except AlreadyRunning as exc:
        source = settings.sources.get("port", "default")
        raise PortInUse(f"{exc}; stop it, or choose another port with --port or SIESTA_PORT "
                        f"(setting 'port', from {source})") from exc
    except OSError as exc:  # no runtime or state dir to write in: the bind alone decides, as before
        log.warning("cannot take the lock on port %d (%s); starting without it", values.port, exc)
        return None


class SiestaRuntime:
    """Owns the manager and the front door of one Siesta instance, in start-up order."""

    def __init__(self, paths: Paths, settings: LoadedSettings, *,
                 manager_factory: ManagerFactory = ModelManager) -> None:
        self.paths = paths
        self.loaded_settings = settings
        self._manager_factory = manager_factory
        self.manager: ModelManager | None = None
        self.api: ApiServer | None = None

    @property
    def url(self) -> str:
        """The base URL a local client uses to reach the front door as bound."""
        if self.api is None:
            raise RuntimeError("the runtime is not started")
        return self.api.url

    async def start(self) -> SiestaRuntime:
        """Starts the manager, then the front door; PortInUse leaves nothing running."""
        manager = self.manager = self._manager_factory(self.paths, self.loaded_settings)
        await manager.start()
        api = ApiServer(manager)
        try:
            await api.start()
        except BaseException:
            await manager.close()
            raise
        self.api = api
        log.info("Siesta %s serving on %s (config %s, %d recipes)", __version__, api.url, self.paths.config_dir,
                 len(manager.models))
        return self

    async def stop(self) -> None:
        """Unloads every model, then closes the front door; safe to call more than once."""
        try:
            if self.manager is not None:
                await self.manager.close()
        finally:
            if self.api is not None:
                await self.api.stop()

    async def __aenter__(self) -> SiestaRuntime:
        return await self.start()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
