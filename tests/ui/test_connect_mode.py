"""The tray app as a client of a Siesta elsewhere (``siesta --connect URL``), against a real
second Siesta: a ``python -m app serve`` process with its own config folder and
fake-backend recipes. The menu shows its models and acts on them (a timeout preset lands
in its recipe file), the settings dialog edits its settings.toml, what only means
something on this machine is hidden, Quit leaves its models loaded, a URL where nothing
answers is shown and retried, and the single-instance lock is per URL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest
from PySide6.QtCore import QPoint

from app.core.config.endpoint import endpoint_for_url
from app.core.models.backend import free_port
from app.ui.app import SiestaApp
from app.ui.platform.single_instance import SingleInstance, instance_name
from app.ui.text import ICON_ERROR
from tests.conftest import fake_command
from tests.ui.helpers import until

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]
SERVE_TIMEOUT = 30.0


class ServedSiesta:
    """A ``siesta serve`` process in its own config folder, with fake-backend recipes."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.config_dir = root / "served"
        self.recipes = self.config_dir / "recipes"
        self.recipes.mkdir(parents=True)
        for name in ("tiny", "spare"):
            command = ", ".join(f'"{part}"' for part in fake_command())
            (self.recipes / f"{name}.toml").write_text(
                f'# {name} on the served machine\nbackend = "command"\ncommand = [{command}]\nunload_timeout = "5m"\n')
        self.settings_file = self.config_dir / "settings.toml"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "serve", "--config-dir", str(self.config_dir), "--port", str(self.port),
             "--stop-timeout", "3"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read_output, daemon=True).start()
        if not self._ready.wait(SERVE_TIMEOUT):
            self.stop()
            raise AssertionError("siesta serve did not start:\n" + "".join(self.output))

    def _read_output(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.output.append(line)
            if "serving on" in line:
                self._ready.set()
        self._ready.set()  # it ended: nothing more to wait for

    def model(self, name: str) -> dict:
        return httpx.get(f"{self.url}/api/v1/models/{name}", timeout=5).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedSiesta]:
    siesta = ServedSiesta(tmp_path)
    try:
        yield siesta
    finally:
        siesta.stop()


def visible_entry_actions(entry) -> dict[str, bool]:
    return {"Show log...": entry.show_log_action.isVisible(), "Open log in editor": entry.log_action.isVisible(),
            "Model settings...": entry.settings_action.isVisible()}


def test_the_tray_shows_and_drives_the_served_siesta(loop, paths, served: ServedSiesta) -> None:
    siesta = SiestaApp(paths, None, connect=endpoint_for_url(served.url, None), tray_available=lambda: True)

    async def body() -> int:
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 15)
        tray = siesta.tray
        assert tray is not None and siesta.runtime is None  # no manager, no front door here
        bridge = siesta.bridge
        assert not bridge.is_local and bridge.api_url == served.url
        tray.menu.popup(QPoint(0, 0))
        assert tray.connection_action.isVisible()
        assert tray.connection_action.text().startswith("Siesta on ") and served.url in tray.connection_action.text()
        assert tray.copy_action.text() == f"&Copy API URL ({served.url}/v1)"

        # What acts on this machine only is hidden; the rest is there.
        hidden = {a.text(): a.isVisible() for a in (tray.discover_action, tray.download_action, tray.import_action,
                                                   tray.logs_action, tray.install_action, tray.engine_action)}
        assert not any(hidden.values()), hidden
        assert tray.load_menu.menuAction().isVisible() and tray.unload_all_action.isVisible()
        assert tray.settings_action.isVisible() and tray.window_action.isVisible()

        # Load from the menu: the served Siesta starts the model; the menu lists it.
        assert sorted(a.text() for a in tray.load_menu.actions()) == ["spare", "tiny"]
        next(a for a in tray.load_menu.actions() if a.text() == "tiny").trigger()
        await until(lambda: "tiny" in tray.entries and "idle" in tray.entries["tiny"].action.text(), 15,
                    "tiny loaded in the menu")
        assert served.model("tiny")["state"] == "ready"
        entry = tray.entries["tiny"]
        assert not any(visible_entry_actions(entry).values()), visible_entry_actions(entry)
        assert entry.timeout_actions[300.0].isChecked()

        # A timeout preset lands in the served Siesta's recipe file.
        recipe = served.recipes / "tiny.toml"
        entry.timeout_actions[900.0].trigger()
        await until(lambda: 'unload_timeout = "15m"' in recipe.read_text(), 10, "15m in the served recipe")
        assert recipe.read_text().startswith("# tiny on the served machine")
        await until(lambda: entry.timeout_actions[900.0].isChecked(), 5, "the menu to show 15 min")
        entry.timeout_actions["default"].trigger()
        await until(lambda: "unload_timeout" not in recipe.read_text(), 10, "the key removed from the recipe")
        tray.menu.hide()

        # Settings: names the machine, shows only what can change from here, saves there.
        siesta.show_settings()
        dialog = siesta.settings_dialog
        assert served.url in dialog.windowTitle() and dialog.windowTitle().startswith("Siesta settings — ")
        assert "host" not in dialog.fields and "port" not in dialog.fields
        for widget in (dialog.host_edit, dialog.port_spin, dialog.autostart_check, dialog.engine_box,
                       dialog.diagnostics):
            assert not widget.isVisibleTo(dialog), widget.objectName()
        assert dialog.max_spin.isVisibleTo(dialog) and dialog.global_edit.isVisibleTo(dialog)
        dialog.fields["global_unload_timeout"].put(600.0)
        await dialog.apply(close=True)
        assert 'global_unload_timeout = "10m"' in served.settings_file.read_text()
        await until(lambda: bridge.settings.global_unload_timeout == 600.0, 5, "the new global timeout")

        # The Models window: the same models, without this machine's buttons.
        siesta.show_models_window()
        window = siesta.window
        assert served.url in window.windowTitle()
        for button in (window.find_button, window.download_button, window.import_button, window.logs_button):
            assert not button.isVisibleTo(window), button.text()
        row = window.row_for("tiny")
        assert not row.log_button.isVisibleTo(window) and not row.settings_button.isVisibleTo(window)
        assert row.action_button.text() == "Unload"

        tray.quit_action.trigger()
        return await asyncio.wait_for(running, 15)

    assert loop.run_until_complete(body()) == 0
    assert served.model("tiny")["state"] == "ready"  # Quit here leaves the served models alone


def test_a_url_where_nothing_answers_is_shown_and_retried(loop, paths) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    siesta = SiestaApp(paths, None, connect=endpoint_for_url(url, None), tray_available=lambda: True)

    async def body() -> int:
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 15)
        tray = siesta.tray
        assert siesta.client.connection.state == "unreachable"
        tray.menu.popup(QPoint(0, 0))
        line = tray.connection_action.text()
        assert tray.connection_action.isVisible() and url in line and "trying again" in line, line
        assert url in tray.icon.toolTip() and tray.icon_state == ICON_ERROR
        assert not tray.load_menu.menuAction().isVisible() and not tray.unload_all_action.isVisible()
        assert not tray.settings_action.isEnabled() and not tray.entries
        tray.menu.hide()
        tray.quit_action.trigger()
        return await asyncio.wait_for(running, 15)

    assert loop.run_until_complete(body()) == 0
    assert not siesta.errors


def test_the_tray_joins_a_siesta_that_starts_later(loop, paths, tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    siesta = SiestaApp(paths, None, connect=endpoint_for_url(url, None), tray_available=lambda: True)
    served: ServedSiesta | None = None

    async def body() -> int:
        nonlocal served
        running = asyncio.ensure_future(siesta.run())
        await asyncio.wait_for(siesta.started.wait(), 15)
        assert siesta.tray.icon_state == ICON_ERROR
        served = await asyncio.to_thread(ServedSiesta, tmp_path, port)
        joined = asyncio.Event()
        siesta.bridge.connectionChanged.connect(lambda: siesta.client.connection.ok and joined.set())
        await asyncio.wait_for(joined.wait(), 40)  # the client's back-off is at most 30 s
        assert [s["name"] for s in siesta.bridge.snapshots()] == ["spare", "tiny"]
        assert siesta.tray.icon_state != ICON_ERROR and siesta.tray.icon.toolTip().startswith("Siesta on ")
        siesta.request_quit()
        return await asyncio.wait_for(running, 15)

    try:
        assert loop.run_until_complete(body()) == 0
    finally:
        if served is not None:
            served.stop()


def test_siesta_connect_from_the_command_line_starts_a_client_tray(served: ServedSiesta, paths) -> None:
    """``python -m app --connect URL``: a real process, a client of the served Siesta; its
    SIGTERM ends it and leaves the served models as they are."""
    httpx.post(f"{served.url}/api/v1/load", json={"model": "tiny"}, timeout=20).raise_for_status()
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": str(REPO)}
    client = subprocess.Popen([sys.executable, "-m", "app", "--connect", served.url, "--config-dir", str(paths.config_dir)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    connected = threading.Event()
    lines: list[str] = []

    def read() -> None:
        assert client.stderr is not None
        for line in client.stderr:
            lines.append(line)
            if f"a client of Siesta at {served.url} (connected)" in line:
                connected.set()
        connected.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert connected.wait(SERVE_TIMEOUT) and client.poll() is None, "".join(lines)
        client.send_signal(signal.SIGTERM)
        assert client.wait(20) == 0, "".join(lines)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(5)
    assert served.model("tiny")["state"] == "ready"


def test_the_single_instance_lock_is_per_url(qapp, paths) -> None:
    local = instance_name(paths.config_dir)
    box = instance_name(paths.config_dir, "http://192.168.1.20:8777")
    assert box != local
    assert instance_name(paths.config_dir / "other", "http://192.168.1.20:8777/") == box  # the config dir plays no part
    assert instance_name(paths.config_dir, "http://192.168.1.21:8777") != box

    first_local, first_box, second_box = SingleInstance(local), SingleInstance(box), SingleInstance(box)
    try:
        assert first_local.acquire() and first_box.acquire()  # a local tray and a --connect tray: both run
        assert not second_box.acquire()  # a second tray for the same URL does not
    finally:
        for instance in (first_local, first_box, second_box):
            instance.release()
