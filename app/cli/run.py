"""The two ways to run Siesta itself: ``siesta serve`` (headless) and bare ``siesta``
(the tray app). Both build one :class:`app.runtime.SiestaRuntime`."""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from app.cli.context import Context
    from app.core.config.paths import Paths
    from app.core.config.settings import LoadedSettings

log = logging.getLogger("siesta")

QT_MODULES = {"PySide6", "shiboken6", "qasync"}  # without them only the tray app is missing


def serve_command(ctx: Context) -> int:
    import asyncio

    from app.runtime import PortInUse, hold_port

    settings = ctx.settings  # read before the loop starts: a bad setting exits 2
    port_lock = None
    try:
        port_lock = hold_port(ctx.paths, settings, "serve")  # one Siesta per port, held until we exit
        return asyncio.run(serve(ctx.paths, settings))
    except PortInUse as exc:
        print(f"siesta: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if port_lock is not None:
            port_lock.release()


async def serve(paths: Paths, settings: LoadedSettings, stop: asyncio.Event | None = None) -> int:
    """Runs Siesta headless until SIGINT/SIGTERM (or ``stop``); then unloads everything."""
    import asyncio

    from app.runtime import SiestaRuntime

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    async with SiestaRuntime(paths, settings):
        await stop.wait()
        log.info("shutting down: unloading every model")
    return 0


def tray_command(ctx: Context) -> int:
    """Bare ``siesta``: the tray app, or the help when Qt is not installed. With
    ``--connect URL``, the tray app as a client of the Siesta there (no manager here)."""
    connect = ctx.endpoint if ctx.args.connect is not None else None
    settings = ctx.settings if connect is None else None
    try:
        from app.ui.app import run_tray_app
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in QT_MODULES:
            raise  # a part of Siesta itself is missing: a broken install, not a machine without Qt
        print(f"siesta: the tray app needs Qt ({exc}); `siesta serve` runs without it", file=sys.stderr)
        ctx.parser.print_help()
        return 0
    return run_tray_app(ctx.paths, settings, connect=connect)
