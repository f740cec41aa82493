"""The doctor's port and remotes, on real sockets: a port that is free, one another program
holds, one a running Siesta holds; a remote that answers, one pointed at a closed port, one
with a key and a password in its URL (never shown)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.doctor.network import bind_problem, port_item, remote_items
from app.core.models.backend import free_port
from tests.portable import posix_only

HOLDER = """
import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


@pytest.fixture
def held_port() -> Iterator[tuple[int, int]]:
    """A port another program (a small Python process) listens on: (port, its pid)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())  # printed once it listens
        yield port, holder.pid
    finally:
        holder.kill()
        holder.wait(10)


def test_a_free_port() -> None:
    port = free_port()
    item = port_item("127.0.0.1", port, "port: flag --port, host: default", None)
    assert item.value == {"host": "127.0.0.1", "port": port, "state": "free"}
    assert item.shown() == f"127.0.0.1:{port}: free (no Siesta runs there now)"
    assert item.source == "port: flag --port, host: default; tried with bind()"


def test_a_port_held_by_another_program(held_port: tuple[int, int]) -> None:
    port, pid = held_port
    assert bind_problem("127.0.0.1", port) is not None
    assert bind_problem("0.0.0.0", port) is not None  # a wildcard bind meets it too
    item = port_item("127.0.0.1", port, "port: default, host: default", None)
    assert item.value["state"] == "other" and item.value["pid"] == pid
    assert item.shown().startswith(f"127.0.0.1:{port}: held by another program (")
    assert f"pid {pid})" in item.shown() and "Siesta cannot listen there" in item.shown()


async def test_a_port_held_by_a_running_siesta(front_door) -> None:  # noqa: ANN001
    manager, _session, url = await front_door()
    port = int(url.rsplit(":", 1)[1])
    mine = await asyncio.to_thread(port_item, "127.0.0.1", port, "port: default, host: default", None)
    assert mine.value["state"] == "this siesta" and mine.value["pid"] == os.getpid()
    assert mine.shown() == f"127.0.0.1:{port}: in use by this Siesta, config dir {manager.paths.config_dir}"
    # the same seen from another process (a `siesta doctor` beside a running `siesta serve`)
    other = await asyncio.to_thread(port_item, "127.0.0.1", port, "port: default, host: default", None, own_pid=1)
    assert other.value["state"] == "siesta" and other.value["siesta"]["version"]
    assert other.shown().startswith(f"127.0.0.1:{port}: in use by a running Siesta {other.value['siesta']['version']}")
    assert f"pid {os.getpid()}" in other.shown()


@posix_only  # ports below 1024 are privileged on POSIX only; root may use them all
def test_a_port_one_may_not_use() -> None:
    if os.geteuid() == 0:
        pytest.skip("root may listen on any port")
    item = port_item("127.0.0.1", 1, "port: default, host: default", None)
    assert not item.found and "not allowed to listen there" in item.missing


def test_a_host_that_is_not_here() -> None:
    item = port_item("192.0.2.1", free_port(), "port: default, host: file settings.toml", None)  # TEST-NET-1
    assert not item.found and item.missing.startswith("192.0.2.1:")


def settings_with_remotes(paths, text: str) -> Path:  # noqa: ANN001
    paths.settings_file.write_text(text)
    return paths.settings_file


def test_a_remote_on_a_closed_port_does_not_answer(paths) -> None:  # noqa: ANN001
    closed = free_port()
    file = settings_with_remotes(paths, f'[remotes.gpubox]\nkind = "siesta"\nurl = "http://127.0.0.1:{closed}"\n')
    (item,) = remote_items(file, {})
    assert item.key == "gpubox" and item.value["answers"] is False
    assert item.shown() == (f"siesta at http://127.0.0.1:{closed} (no key): does not answer "
                            "(GET /api/v1/health: connection refused)")


async def test_a_remote_that_answers_and_secrets_never_shown(paths, front_door) -> None:  # noqa: ANN001
    _manager, _session, url = await front_door()
    closed = free_port()
    file = settings_with_remotes(paths, f"""
[remotes.box]
kind = "siesta"
url = "{url}"
api_key = "sekrit-key-1"

[remotes.lab]
kind = "openai"
url = "http://admin:sekrit-pass-2@127.0.0.1:{closed}/v1"

[remotes.bad]
kind = "nope"
url = "http://user:sekrit-pass-3@x"
""")
    env = {"SIESTA_REMOTE_LAB_API_KEY": "sekrit-key-4"}
    found = {i.key: i for i in await asyncio.to_thread(lambda: list(remote_items(file, env)))}
    box = found["box"]
    assert box.value["answers"] is True and box.value["api_key"] == "(set)"
    assert box.shown() == f"siesta at {url} (key set, from settings.toml): answers (GET /api/v1/health: OK)"
    lab = found["invalid:lab"]  # credentials in a URL are refused (keys go in api_key)
    assert not lab.found and "key url" in lab.missing and "api_key" in lab.missing
    bad = found["invalid:bad"]
    assert not bad.found and bad.missing.startswith("left out: key kind: expected one of siesta")
    everything = json.dumps([i.to_json() for i in found.values()]) + "".join(i.shown() for i in found.values())
    assert "sekrit" not in everything


async def test_a_remote_that_answers_with_an_error_still_answers(paths, front_door) -> None:  # noqa: ANN001
    _manager, _session, url = await front_door(api_key="the-right-one")
    file = settings_with_remotes(paths, f'[remotes.box]\nkind = "siesta"\nurl = "{url}"\napi_key = "a-wrong-one"\n')
    (item,) = await asyncio.to_thread(lambda: list(remote_items(file, {})))
    assert item.value["answers"] is True
    assert "answered HTTP 401" in item.shown() and "a-wrong-one" not in json.dumps(item.to_json())


def test_no_remotes(paths) -> None:  # noqa: ANN001
    (item,) = remote_items(paths.settings_file, {})
    assert item.value == [] and item.shown() == "none"
