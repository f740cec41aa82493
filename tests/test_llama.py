"""Siesta in front of the real llama-server on a tiny model the project makes itself.

Covers the issue's list end to end: load on first request, streaming, idle unload at the
right moment (process gone), per-model and per-request timeouts, a timeout change persisted
with comments intact, a group of two, max_loaded_models eviction, a killed backend, and
shutdown with no children left; plus the `siesta` command as a real process.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.core.models.model import ModelState
from app.demo_model import write_tiny_model
from tests.conftest import LLAMA_SERVER, pid_alive
from tests.portable import KILLED_RETURNCODE, kill_hard

pytestmark = [pytest.mark.llama, pytest.mark.timeout(90)]


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "models" / "tiny.gguf")


@pytest.fixture
def llama_recipe(write_recipe, tiny_model):
    def write(name: str, extra: str = "") -> Path:
        return write_recipe(name, f'# {name}: the tiny test model\nbackend = "llamacpp"\nmodel = "{tiny_model}"\n'
                                  f'args = ["-t", "1", "--ctx-size", "256"]  # keep it small\n{extra}')
    return write




CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


async def test_first_request_loads_real_llama_server_and_streams(front_door, llama_recipe):
    llama_recipe("tiny")
    manager, http, url = await front_door()
    started = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json={"model": "tiny", **CHAT}) as resp:
        body = await resp.json()
    cold = time.monotonic() - started
    assert resp.status == 200 and isinstance(body["choices"][0]["message"]["content"], str)
    assert cold < 10
    model = manager.get("tiny")
    assert model.state is ModelState.READY and pid_alive(model.pid)
    chunks = 0
    async with http.post(f"{url}/v1/chat/completions", json={"model": "tiny", "stream": True, **CHAT}) as resp:
        assert resp.content_type == "text/event-stream"
        async for line in resp.content:
            if line.startswith(b"data: {"):
                chunks += 1
    assert chunks >= 3


async def test_idle_unload_at_the_right_moment_and_process_gone(front_door, llama_recipe, event_log):
    llama_recipe("tiny", 'unload_timeout = "1s"\n')
    manager, http, url = await front_door()
    events = event_log(manager)
    async with http.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 4}) as resp:
        assert resp.status == 200
    model = manager.get("tiny")
    pid, unload_at = model.pid, model.unload_at
    assert unload_at is not None
    await events.wait_for("tiny", "idle", timeout=5)  # the unload
    assert time.time() >= unload_at
    assert time.time() - unload_at < 2.0
    assert not pid_alive(pid)


async def test_per_request_keep_alive_overrides_recipe(front_door, llama_recipe):
    llama_recipe("tiny", 'unload_timeout = "10m"\n')
    manager, http, url = await front_door()
    async with http.post(f"{url}/v1/chat/completions", json={"model": "tiny", "keep_alive": "30s", **CHAT}) as resp:
        assert resp.status == 200
    snap = manager.get("tiny").snapshot()
    assert (snap["unload_timeout"], snap["timeout_source"]) == (30, "request")
    async with http.post(f"{url}/v1/chat/completions", json={"model": "tiny", "keep_alive": 0, **CHAT}) as resp:
        assert resp.status == 200
    deadline = time.monotonic() + 10
    while manager.get("tiny").state is not ModelState.UNLOADED and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert manager.get("tiny").state is ModelState.UNLOADED


async def test_timeout_change_persists_with_comments_intact(front_door, llama_recipe):
    path = llama_recipe("tiny")
    manager, http, url = await front_door()
    await http.post(f"{url}/api/v1/load", json={"model": "tiny"})
    async with http.patch(f"{url}/api/v1/models/tiny", json={"unload_timeout": "15m"}) as resp:
        assert (await resp.json())["unload_timeout"] == 900
    text = path.read_text()
    assert "# tiny: the tiny test model" in text and "# keep it small" in text
    assert 'unload_timeout = "15m"' in text
    assert manager.get("tiny").unload_at == pytest.approx(manager.get("tiny").idle_since + 900)


async def test_group_of_two_and_max_loaded_eviction(front_door, llama_recipe, event_log):
    llama_recipe("a", 'group = "gpu"\n')
    llama_recipe("b", 'group = "gpu"\n')
    llama_recipe("c")
    llama_recipe("d")
    manager, http, url = await front_door(max_loaded_models=2)
    events = event_log(manager)
    for name in ("a", "b"):
        async with http.post(f"{url}/v1/chat/completions", json={"model": name, **CHAT}) as resp:
            assert resp.status == 200
    assert manager.get("a").state is ModelState.UNLOADED and "group" in events.reasons("a")
    for name in ("c", "d"):
        async with http.post(f"{url}/v1/chat/completions", json={"model": name, **CHAT}) as resp:
            assert resp.status == 200
    assert "evicted" in events.reasons("b")
    loaded = [m.name for m in manager.models.values() if m.pid]
    assert sorted(loaded) == ["c", "d"]


async def test_killed_backend_is_noticed_and_next_request_reloads(front_door, llama_recipe, event_log):
    llama_recipe("tiny")
    manager, http, url = await front_door()
    events = event_log(manager)
    await http.post(f"{url}/api/v1/load", json={"model": "tiny"})
    pid = manager.get("tiny").pid
    kill_hard(pid)
    event = await events.wait_for("tiny", "crashed", timeout=5)
    assert event["model"]["state"] == "failed" and f"exit {KILLED_RETURNCODE}" in event["model"]["error"]
    async with http.post(f"{url}/v1/chat/completions", json={"model": "tiny", **CHAT}) as resp:
        assert resp.status == 200
    assert manager.get("tiny").pid != pid


# ---- the siesta command as a real process ----------------------------------------------------

def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_of(pid: int) -> list[int]:
    import psutil
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


@pytest.fixture
def siesta_serve(paths, llama_recipe):
    procs: list[subprocess.Popen] = []

    def start(*extra: str) -> tuple[subprocess.Popen, str]:
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--config-dir", str(paths.config_dir), "serve", "--port", str(port),
             "--llama-server", str(LLAMA_SERVER), "--stop-timeout", "3", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/api/v1/health", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
            time.sleep(0.05)
        raise AssertionError("siesta serve did not answer /api/v1/health")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _siesta(paths, url: str, *args: str) -> subprocess.CompletedProcess:
    port = url.rsplit(":", 1)[1]
    return subprocess.run([sys.executable, "-m", "app", "--config-dir", str(paths.config_dir), "--port", port, *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_drives_the_running_instance(siesta_serve, llama_recipe, paths):
    path = llama_recipe("tiny")
    proc, url = siesta_serve()
    out = _siesta(paths, url, "load", "tiny")
    assert out.returncode == 0, out.stderr
    assert "ready" in out.stdout
    ps = _siesta(paths, url, "ps")
    header = ps.stdout.splitlines()[0].split()
    assert header[:5] == ["NAME", "STATE", "IN-FLIGHT", "RAM", "VRAM"]
    assert "tiny" in ps.stdout and "ready" in ps.stdout and "(global)" in ps.stdout
    assert _siesta(paths, url, "timeout", "tiny", "10m").returncode == 0
    assert 'unload_timeout = "10m"' in path.read_text() and "# keep it small" in path.read_text()
    model = httpx.get(url + "/api/v1/models/tiny").json()
    assert model["unload_at"] == pytest.approx(model["idle_since"] + 600)
    assert _siesta(paths, url, "timeout", "tiny", "default").returncode == 0
    assert "unload_timeout" not in path.read_text()
    assert _siesta(paths, url, "timeout", "--global", "7m").returncode == 0
    assert httpx.get(url + "/api/v1/models/tiny").json()["unload_timeout"] == 420
    assert _siesta(paths, url, "unload", "tiny").returncode == 0
    assert httpx.get(url + "/api/v1/models/tiny").json()["state"] == "unloaded"
    bad = _siesta(paths, url, "timeout", "tiny", "soonish")
    assert bad.returncode != 0 and "soonish" in bad.stderr


def test_sigterm_stops_every_model_server(siesta_serve, llama_recipe):
    llama_recipe("a")
    llama_recipe("b")
    proc, url = siesta_serve()
    for name in ("a", "b"):
        assert httpx.post(url + "/api/v1/load", json={"model": name}, timeout=30).status_code == 200
    pids = [httpx.get(url + f"/api/v1/models/{n}").json()["pid"] for n in ("a", "b")]
    assert all(pid_alive(p) for p in pids)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert not any(pid_alive(p) for p in pids)


def test_sigkill_of_siesta_still_takes_its_model_servers_down(siesta_serve, llama_recipe):
    llama_recipe("a")
    proc, url = siesta_serve()
    assert httpx.post(url + "/api/v1/load", json={"model": "a"}, timeout=30).status_code == 200
    pid = httpx.get(url + "/api/v1/models/a").json()["pid"]
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not pid_alive(pid)


def test_events_and_version(siesta_serve):
    out = subprocess.run([sys.executable, "-m", "app", "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout.startswith("siesta ")
    proc, url = siesta_serve()
    health = httpx.get(url + "/api/v1/health").json()
    assert health["version"] == out.stdout.split()[1]
    assert json.dumps(health)
