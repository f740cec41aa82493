"""A second launch while the first Siesta is still starting: its request to show a window
is held until the first one's tray (or window) exists, and answered then.

The second launch is a real ``siesta`` process (``python -m app``, same config dir); the
first is the app in this process, its manager held in ``start()`` for as long as the test
needs, so the second one lands in start-up every time."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from app.core.manager import ModelManager
from app.core.models.backend import free_port
from app.ui.app import SiestaApp
from app.ui.platform.single_instance import SingleInstance, instance_name
from tests.ui.helpers import until

REPO = Path(__file__).resolve().parents[3]


def test_a_launch_during_start_up_shows_the_window_once_the_app_is_up(loop, paths, make_settings) -> None:
    starting = asyncio.Event()
    go_on = asyncio.Event()

    class SlowToStart(ModelManager):
        """A manager whose start waits for the test: the moment a second launch lands in."""

        async def start(self) -> None:
            starting.set()
            await go_on.wait()
            await super().start()

    instance = SingleInstance(instance_name(paths.config_dir))  # as run_tray_app makes it
    assert instance.acquire()
    siesta = SiestaApp(paths, make_settings(port=free_port()), instance, tray_available=lambda: True,
                       manager_factory=SlowToStart)

    async def second_launch() -> str:
        """Runs `siesta` again for the same config dir; what it printed (it must exit 0)."""
        env = {**os.environ, "QT_QPA_PLATFORM": "offscreen",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "--config-dir", str(paths.config_dir), cwd=REPO, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(second.communicate(), 60)
        assert second.returncode == 0, err.decode()
        return err.decode()

    async def body() -> None:
        running = asyncio.ensure_future(siesta.run())
        try:
            await asyncio.wait_for(starting.wait(), 10)
            assert "already running" in await second_launch()
            assert siesta.window is None and not siesta.has_tray  # nothing to show yet
            go_on.set()
            await asyncio.wait_for(siesta.started.wait(), 10)
            assert siesta.has_tray  # with a tray, only the second launch opens the window
            await until(lambda: siesta.window is not None and siesta.window.isVisible(), 5,
                        "the Models window the second launch asked for")

            siesta.window.hide()  # once up, a later launch is shown at once
            assert "already running" in await second_launch()
            await until(lambda: siesta.window.isVisible(), 5, "the window again")
        finally:
            siesta.request_quit()
            await asyncio.wait_for(running, 20)

    try:
        loop.run_until_complete(body())
    finally:
        instance.release()
