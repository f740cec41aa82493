"""Shared fixtures: an isolated home for every test, recipe writers, a running manager and API.

Tests never touch the real home, on any OS: platformdirs' ``user_*_dir`` functions (which
Siesta's ``Paths.resolve``, ``engine_cache_dir`` and the instance lock's folder use) are
patched to the test's own temporary folder, and the variables that send them there in a
child process (``HOME``, ``XDG_*``; on Windows ``USERPROFILE``, ``APPDATA``, ``LOCALAPPDATA``
and platformdirs' ``WIN_PD_OVERRIDE_*``: see :func:`tests.portable.home_environment`) are
set, so every ``python -m app`` a test starts inherits them. ``SIESTA_*`` variables are
removed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import platformdirs
import pytest

from app.core.config.clock import Clock
from app.core.config.paths import Paths
from app.core.config.settings import LoadedSettings, load_settings
from app.core.manager import ModelManager
from tests.portable import PLATFORMDIRS_UNDER_HOME, home_environment, pid_alive

__all__ = ["LLAMA_SERVER", "pid_alive"]  # pid_alive: many tests import it from here

TESTS_DIR = Path(__file__).parent
FAKE_BACKEND = TESTS_DIR / "fakes" / "backend.py"
LLAMA_CACHE_BINARY = Path.home() / ".cache/siesta/engine/llama-cpp-python-0.3.36/llama-server"


def find_test_llama_server() -> Path | None:
    """The real llama-server for integration tests: $SIESTA_TEST_LLAMA_SERVER, the build cache, or PATH."""
    env = os.environ.get("SIESTA_TEST_LLAMA_SERVER")
    if env:
        return Path(env)
    if LLAMA_CACHE_BINARY.is_file():
        return LLAMA_CACHE_BINARY
    found = shutil.which("llama-server")
    return Path(found) if found else None


LLAMA_SERVER = find_test_llama_server()  # found before the XDG variables are redirected


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", action="store_true", help="run the long soak tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_soak = pytest.mark.skip(reason="soak test: run with --soak")
    skip_llama = pytest.mark.skip(reason="no llama-server: run scripts/build-llama-server.sh or set SIESTA_TEST_LLAMA_SERVER")
    for item in items:
        if "soak" in item.keywords and not config.getoption("--soak"):
            item.add_marker(skip_soak)
        if "llama" in item.keywords and LLAMA_SERVER is None:
            if os.environ.get("CI"):
                continue  # in CI a missing engine is a failure, not a skip
            item.add_marker(skip_llama)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points every user dir Siesta could touch into the test's temporary folder."""
    home = tmp_path / "home"
    for var, value in home_environment(home).items():
        Path(value).mkdir(mode=0o700, parents=True, exist_ok=True)  # XDG_RUNTIME_DIR must be 0700
        monkeypatch.setenv(var, value)
    for name, under in PLATFORMDIRS_UNDER_HOME.items():
        monkeypatch.setattr(platformdirs, name, _under_home(home, under))
    for var in list(os.environ):
        if var.startswith("SIESTA_") and var != "SIESTA_TEST_LLAMA_SERVER":
            monkeypatch.delenv(var)
    monkeypatch.delenv("LEMONADE_GLOBAL_AUTO_UNLOAD_TIMER", raising=False)
    return home


def _under_home(home: Path, under: str) -> Callable[..., str]:
    def user_dir(appname: str | None = None, *_args: Any, **_kwargs: Any) -> str:
        return str(home / under.format(app=appname or "app"))

    return user_dir


@pytest.fixture
def paths(tmp_path: Path) -> Paths:
    p = Paths(config_dir=tmp_path / "config", log_dir=tmp_path / "logs", data_dir=tmp_path / "data")
    p.recipes_dir.mkdir(parents=True)
    return p


def fake_command(*options: str) -> list[str]:
    return [sys.executable, str(FAKE_BACKEND), "--port", "{port}", *options]


@pytest.fixture
def write_recipe(paths: Paths) -> Callable[..., Path]:
    """Writes ``recipes/<name>.toml``; ``fake=[...]`` makes a fake-backend command recipe."""

    def write(name: str, text: str | None = None, *, fake: list[str] | None = None, **keys: Any) -> Path:
        path = paths.recipe_file(name)
        if text is None:
            lines = [f"# recipe {name} written by a test"]
            if fake is not None or "command" not in keys and "model" not in keys:
                lines.append('backend = "command"')
                lines.append("command = [" + ", ".join(f'"{c}"' for c in fake_command(*(fake or []))) + "]")
            for key, value in keys.items():
                lines.append(f"{key} = {_toml_value(value)}")
            text = "\n".join(lines) + "\n"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.fixture
def make_settings(paths: Paths) -> Callable[..., LoadedSettings]:
    def make(**flags: Any) -> LoadedSettings:
        flags.setdefault("stop_timeout", 3)
        flags.setdefault("load_timeout", 20)
        if LLAMA_SERVER is not None:
            flags.setdefault("llama_server", str(LLAMA_SERVER))
        return load_settings(paths.settings_file, flags)

    return make


@pytest.fixture
async def manager_factory(paths: Paths, make_settings: Callable[..., LoadedSettings]) -> AsyncIterator[Callable[..., Any]]:
    """Starts ModelManagers on the test's loop and always closes them (no child left behind)."""
    managers: list[ModelManager] = []

    async def make(*, clock: Clock | None = None, watch_files: bool = False, **flags: Any) -> ModelManager:
        manager = ModelManager(paths, make_settings(**flags), clock=clock or Clock(max_slice=0.2),
                               watch_files=watch_files)
        await manager.start()
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        await manager.close()


class EventLog:
    """Collects a manager's events and lets a test await the next one that matches."""

    def __init__(self, manager: ModelManager) -> None:
        self.events: list[dict[str, Any]] = []
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], asyncio.Future[dict[str, Any]]]] = []
        manager.subscribe(self._on_event)

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        for pred, fut in list(self._waiters):
            if not fut.done() and pred(event):
                fut.set_result(event)

    def reasons(self, name: str | None = None) -> list[str]:
        return [e["reason"] for e in self.events if name is None or e["model"]["name"] == name]

    async def wait_for(self, name: str, reason: str, timeout: float = 15.0, *, past: bool = False) -> dict[str, Any]:
        """Waits for the next event ``reason`` of model ``name`` (or one already seen, with ``past``)."""

        def pred(e: dict[str, Any]) -> bool:
            return e["model"]["name"] == name and e["reason"] == reason

        if past:
            for e in self.events:
                if pred(e):
                    return e
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((pred, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiters.remove((pred, fut))


@pytest.fixture
def event_log() -> Callable[[ModelManager], EventLog]:
    return EventLog


@pytest.fixture
async def front_door(manager_factory) -> AsyncIterator[Callable[..., Any]]:
    """Starts a manager with its HTTP API on a free port; returns (manager, client session, base URL)."""
    import aiohttp

    from app.api.server import ApiServer

    started: list[tuple[ApiServer, aiohttp.ClientSession]] = []

    async def start(**flags: Any) -> tuple[ModelManager, aiohttp.ClientSession, str]:
        manager = await manager_factory(**flags)
        server = ApiServer(manager)
        await server.start(port=0)
        session = aiohttp.ClientSession()
        started.append((server, session))
        return manager, session, f"http://127.0.0.1:{server.port}"

    yield start
    for server, session in started:
        await session.close()
        await server.stop()
