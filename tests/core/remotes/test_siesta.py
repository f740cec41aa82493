"""Two real Siesta processes, one a remote of the other, each with the tiny model.

A (the one a user talks to) has ``[remotes.B]`` pointing at B. Through A: a chat for
``B/tiny``; B's model in A's list with ``remote``, its state and countdown; a timeout
change that lands in B's recipe file; an unload on B; B's events reaching A's event
stream; B stopped (502 ``remote_unreachable`` at once, A's own model still served); a
remote whose listener never accepts (502 within 3 s); remotes edited without a restart;
two Siestas that are each other's remote (no loop); the API key sent to B only and never
shown.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.demo_model import write_tiny_model
from tests.conftest import LLAMA_SERVER

pytestmark = [pytest.mark.llama, pytest.mark.timeout(120)]

CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Siesta:
    """One ``siesta serve`` process with its own config folder and the tiny model's recipe."""

    def __init__(self, root: Path, name: str, model: Path, *, api_key: str | None = None) -> None:
        self.config_dir = root / name
        self.recipes = self.config_dir / "recipes"
        self.recipes.mkdir(parents=True)
        self.recipe = self.recipes / "tiny.toml"
        self.recipe.write_text(f'# the tiny model on {name}\nbackend = "llamacpp"\nmodel = "{model}"\n'
                               'args = ["-t", "1", "--ctx-size", "256"]  # keep it small\n')
        self.settings = self.config_dir / "settings.toml"
        self.settings.write_text(f"# {name}'s settings\n" + (f'api_key = "{api_key}"\n' if api_key else ""))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.proc: subprocess.Popen[str] | None = None

    def add_remote(self, name: str, url: str, *, kind: str = "siesta", api_key: str | None = None) -> None:
        key = f'api_key = "{api_key}"\n' if api_key else ""
        with self.settings.open("a") as fh:
            fh.write(f'\n[remotes.{name}]  # another machine\nkind = "{kind}"\nurl = "{url}"\n{key}')

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--config-dir", str(self.config_dir), "serve", "--port", str(self.port),
             "--llama-server", str(LLAMA_SERVER), "--stop-timeout", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/v1/health", headers=self.headers, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stdout.read() if self.proc.stdout else "siesta serve exited")
            time.sleep(0.05)
        raise AssertionError("siesta serve did not answer /api/v1/health")

    def stop(self) -> str:
        """Stops the process (SIGTERM: it unloads its models) and returns what it printed."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        out = self.proc.stdout.read() if self.proc.stdout else ""
        self.proc = None
        return out

    def get(self, path: str, **kw) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=30, **kw)

    def post(self, path: str, body: dict, **kw) -> httpx.Response:
        return httpx.post(self.url + path, json=body, headers=self.headers, timeout=60, **kw)

    def model(self, name: str) -> dict | None:
        return next((m for m in self.get("/api/v1/models").json()["models"] if m["name"] == name), None)


def wait_until(predicate, timeout: float = 15.0, what: str = "condition"):
    """Polls another process's state (there is no in-process event to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Siesta, Siesta]]:
    """B (the GPU box, with an API key) and A, whose remote B is."""
    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    b = Siesta(tmp_path, "b", model, api_key="b-secret-key")
    a = Siesta(tmp_path, "a", model)
    a.add_remote("B", b.url, api_key="b-secret-key")
    started: list[Siesta] = []
    try:
        b.start()
        started.append(b)
        a.start()
        started.append(a)
        yield a, b
    finally:
        for siesta in reversed(started):
            siesta.stop()


def test_chat_state_countdown_timeout_and_unload_through_the_other_siesta(pair):
    a, b = pair
    wait_until(lambda: a.model("B/tiny"), what="B/tiny in A's list")
    listed = a.model("B/tiny")
    assert listed["remote"] == "B" and listed["state"] == "unloaded" and listed["remote_kind"] == "siesta"
    assert any(m["id"] == "B/tiny" for m in a.get("/v1/models").json()["data"])

    chat = a.post("/v1/chat/completions", {"model": "B/tiny", **CHAT})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"] is not None
    assert b.model("tiny")["state"] == "ready"  # loaded on B, by B
    assert a.model("tiny")["state"] == "unloaded"  # A's own tiny is another model

    shown = wait_until(lambda: (m := a.model("B/tiny")) and m["state"] == "ready" and m["unloads_in"] and m,
                       what="B/tiny ready with a countdown in A's list")
    assert 290 < shown["unloads_in"] <= 300  # B's global timeout, counting on B

    changed = httpx.patch(a.url + "/api/v1/models/B/tiny", json={"unload_timeout": "10m"}, timeout=30)
    assert changed.status_code == 200, changed.text
    text = b.recipe.read_text()
    assert 'unload_timeout = "10m"' in text and "# keep it small" in text  # written on B, comments kept
    wait_until(lambda: a.model("B/tiny")["unload_timeout"] == 600, what="the new timeout in A's list")
    cli = subprocess.run([sys.executable, "-m", "app", "--config-dir", str(a.config_dir), "--port", str(a.port),
                          "timeout", "B/tiny", "5m"], capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    assert 'unload_timeout = "5m"' in b.recipe.read_text()  # the CLI goes through A, which asks B

    unloaded = a.post("/api/v1/unload", {"model": "B/tiny"})
    assert unloaded.status_code == 200, unloaded.text
    assert b.model("tiny")["state"] == "unloaded"
    wait_until(lambda: a.model("B/tiny")["state"] == "unloaded", what="the unload in A's list")


def test_keep_alive_goes_through_to_the_other_siesta_and_events_reach_subscribers(pair):
    a, b = pair
    wait_until(lambda: a.model("B/tiny"), what="B/tiny in A's list")
    with httpx.stream("GET", a.url + "/api/v1/events", timeout=30) as events:
        lines = events.iter_lines()
        chat = a.post("/v1/chat/completions", {"model": "B/tiny", "keep_alive": "7m", **CHAT})
        assert chat.status_code == 200, chat.text
        seen = []
        for line in lines:
            if line.startswith("data:"):
                event = json.loads(line[5:])
                seen.append((event["model"]["name"], event["model"]["state"]))
                if event["model"]["name"] == "B/tiny" and event["model"]["state"] == "ready":
                    break
    assert ("B/tiny", "ready") in seen
    model = b.model("tiny")
    assert model["unload_timeout"] == 420 and model["timeout_source"] == "request"  # keep_alive reached B


def test_other_siesta_stopped_then_a_listener_that_never_accepts(pair, tmp_path):
    a, b = pair
    wait_until(lambda: a.model("B/tiny"), what="B/tiny in A's list")
    b.stop()
    started = time.monotonic()
    answer = a.post("/v1/chat/completions", {"model": "B/tiny", **CHAT})
    assert time.monotonic() - started < 1.0
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["code"] == "remote_unreachable" and "'B'" in error["message"] and b.url in error["message"]
    own = a.post("/v1/chat/completions", {"model": "tiny", **CHAT})  # A keeps serving its own models
    assert own.status_code == 200, own.text
    status = wait_until(lambda: [r for r in a.get("/api/v1/remotes").json()["remotes"] if r["status"] == "unreachable"],
                        what="B shown unreachable")
    assert status[0]["name"] == "B" and status[0]["error"]
    assert a.model("B/tiny") is None  # its models leave the list until it answers again

    # A listener that never accepts: the kernel completes the handshake, nothing ever answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        a.settings.write_text(a.settings.read_text() + f'\n[remotes.mute]\nkind = "siesta"\n'
                                                       f'url = "http://127.0.0.1:{silent.getsockname()[1]}"\n')
        wait_until(lambda: any(r["name"] == "mute" for r in a.get("/api/v1/remotes").json()["remotes"]),
                   what="the new remote applied without a restart")
        started = time.monotonic()
        answer = a.post("/v1/chat/completions", {"model": "mute/tiny", **CHAT})
        assert time.monotonic() - started < 3.0
        assert answer.status_code == 502 and answer.json()["error"]["code"] == "remote_unreachable"


def test_each_others_remote_lists_no_loop_and_the_key_is_never_shown(tmp_path):
    model = write_tiny_model(tmp_path / "models" / "tiny.gguf")
    a = Siesta(tmp_path, "a", model)
    b = Siesta(tmp_path, "b", model)
    a.add_remote("B", b.url, api_key="key-for-b-only")
    b.add_remote("A", a.url)
    try:
        a.start()
        b.start()
        wait_until(lambda: a.model("B/tiny") and b.model("A/tiny"), what="each in the other's list")
        names_a = {m["name"] for m in a.get("/api/v1/models").json()["models"]}
        assert names_a == {"tiny", "B/tiny"}  # not B/A/tiny
        health = a.get("/api/v1/health").text
        assert "key-for-b-only" not in health and "(set)" in health
        bare = a.post("/v1/chat/completions", {"model": "tiny", **CHAT})  # local wins over B's tiny
        assert bare.status_code == 200 and a.model("tiny")["state"] == "ready"
        assert b.model("tiny")["state"] == "unloaded"
    finally:
        logs = b.stop() + a.stop()
    assert "key-for-b-only" not in logs
