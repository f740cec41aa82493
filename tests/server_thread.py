"""A fake HTTP server on an event loop of its own, in a daemon thread: for code under test
that makes blocking calls (httpx.Client in a worker thread) and for tests with no loop."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class ServerThread:
    """Subclasses build their apps in :meth:`_start` and serve each with :meth:`serve`."""

    def start(self) -> ServerThread:
        self._runners: list[web.AppRunner] = []
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        raise NotImplementedError

    async def serve(self, app: web.Application) -> str:
        """Serves ``app`` on a free loopback port; its base URL."""
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self._runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    def stop(self) -> None:
        async def close() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
