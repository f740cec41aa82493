"""The whole desktop app: manager, HTTP API and GUI on one qasync loop, in one process."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.core.models.backend import free_port
from app.ui import app as app_module
from app.ui.app import SiestaApp
from app.ui.windows.models import COL_STATE
from tests.ui.helpers import pid_alive, until

REPO = Path(__file__).resolve().parents[2]


def test_runs_manager_api_and_fallback_window_then_quits_cleanly(loop, paths, make_settings, write_recipe) -> None:
    write_recipe("tiny", fake=[], unload_timeout="5m")
    port = free_port()
    siesta = SiestaApp(paths, make_settings(port=port), tray_available=lambda: False)

    async def body() -> int:
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 10)
        window = siesta.window
        assert window is not None and window.isVisible()
        assert not siesta.has_tray
        async with aiohttp.ClientSession() as http:  # a client on the same loop as the GUI
            resp = await http.post(f"http://127.0.0.1:{port}/api/v1/load", json={"model": "tiny"})
            assert resp.status == 200, await resp.text()
        pid = siesta.manager.get("tiny").pid
        assert pid is not None and pid_alive(pid)
        await until(lambda: window.table.item(0, COL_STATE).text().startswith("idle, unloads in"), 5)
        siesta.show_settings()
        dialog = siesta.settings_dialog
        assert dialog is not None and dialog.isVisible()
        window.close()  # no tray: closing the window quits
        code = await asyncio.wait_for(running, 20)
        assert not pid_alive(pid)
        return code

    assert loop.run_until_complete(body()) == 0
    assert all(s["state"] == "unloaded" for s in siesta.manager.snapshots())


def test_a_tray_that_appears_later_gets_the_icon(loop, paths, make_settings, monkeypatch) -> None:
    monkeypatch.setattr(app_module, "TRAY_PROBE_MS", 20)
    answers = iter([False, False])
    siesta = SiestaApp(paths, make_settings(port=free_port()), tray_available=lambda: next(answers, True))

    async def body() -> None:
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 10)
        assert not siesta.has_tray
        await until(lambda: siesta.has_tray, 5, "the tray icon")
        siesta.window.close()  # with a tray now, closing the window only hides it
        await asyncio.sleep(0)
        assert not running.done()
        # Nothing is visible now (the menu is closed): no GUI timer may run.
        timers = siesta.tray.findChildren(QTimer) + siesta.window.findChildren(QTimer) + [siesta._tray_probe]
        assert not [t for t in timers if t.isActive()]
        siesta.tray.quit_action.trigger()
        assert await asyncio.wait_for(running, 10) == 0

    loop.run_until_complete(body())


def test_port_in_use_is_reported_and_exits(loop, paths, make_settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        siesta = SiestaApp(paths, make_settings(port=port), tray_available=lambda: False)

        async def body() -> int:
            running = asyncio.ensure_future(siesta.run())
            box = await until(lambda: next((w for w in QApplication.topLevelWidgets()
                                            if w.objectName() == "fatal-error" and w.isVisible()), None), 10)
            assert f"port {port}" in box.text()
            box.button(QMessageBox.StandardButton.Ok).click()
            return await asyncio.wait_for(running, 10)

        assert loop.run_until_complete(body()) == 1
    assert siesta.window is None and siesta.tray is None


def test_errors_nobody_caught_are_logged_and_kept(paths, make_settings, caplog) -> None:
    siesta = SiestaApp(paths, make_settings())
    with caplog.at_level(logging.ERROR, logger="siesta.ui"):
        try:
            raise ValueError("boom in a slot")
        except ValueError as exc:
            siesta.excepthook(ValueError, exc, exc.__traceback__)
        siesta.loop_exception_handler(None, {"message": "Task exception was never retrieved",
                                             "exception": RuntimeError("lost")})
    assert siesta.errors == ["ValueError: boom in a slot", "Task exception was never retrieved: lost"]
    assert "boom in a slot" in caplog.text and "lost" in caplog.text


def test_siesta_command_end_to_end_single_instance_and_sigterm(paths, write_recipe, tmp_path) -> None:
    """`python -m app` with no sub-command: a real process with a real loop; a second launch
    asks the first to show its window and exits; a `siesta serve` on its port is refused;
    SIGTERM unloads everything."""
    write_recipe("tiny", fake=[])
    port = free_port()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "app", "--config-dir", str(paths.config_dir), "--port", str(port),
               "--stop-timeout", "3"]
    first = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:  # wait for the API to answer
            assert first.poll() is None, first.communicate()
            try:
                if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the app did not start"
            time.sleep(0.05)
        model = httpx.post(base + "/api/v1/load", json={"model": "tiny"}, timeout=20).json()
        pid = model["pid"]
        assert pid_alive(pid)

        second = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stderr
        # a `siesta serve` on its port (of another config dir: the port decides) says who runs there
        serve = subprocess.run([sys.executable, "-m", "app", "serve", "--config-dir", str(tmp_path / "other"),
                                "--port", str(port)], env=env, cwd=REPO, capture_output=True, text=True, timeout=30)
        assert serve.returncode == 1, serve.stderr
        assert f"Siesta is already running on 127.0.0.1:{port} (pid {first.pid}), as the tray app" in serve.stderr
        assert httpx.get(base + "/api/v1/health", timeout=2).status_code == 200  # still the first one

        first.send_signal(signal.SIGTERM)
        _out, err = first.communicate(timeout=20)
        assert first.returncode == 0, err
        assert "another `siesta` was started: showing the Models window" in err
        assert not pid_alive(pid)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()


@pytest.mark.timeout(60)
def test_long_qasync_run_keeps_none_alive(loop) -> None:
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on every qasync loop step and
    dies with ``Fatal Python error: none_dealloc`` after about 8,000 steps (6.9.3 to 6.11.3
    are fine). 20,000 steps must leave it be."""
    if sys.version_info >= (3, 12):
        pytest.skip("None is immortal on Python 3.12+; the leak cannot crash there")

    async def spin() -> tuple[int, int]:
        before = sys.getrefcount(None)
        for _ in range(20_000):
            await asyncio.sleep(0)
        return before, sys.getrefcount(None)

    before, after = loop.run_until_complete(spin())
    assert after >= before - 100, f"None lost {before - after} references over 20,000 loop steps"


def test_the_copied_url_reaches_a_wildcard_bind_on_loopback() -> None:
    from app.core.config.endpoint import client_url

    assert client_url("127.0.0.1", 8777) == "http://127.0.0.1:8777"
    assert client_url("0.0.0.0", 8777) == "http://127.0.0.1:8777"
    assert client_url("::", 9000) == "http://[::1]:9000"
    assert client_url("myhost.lan", 80) == "http://myhost.lan:80"
