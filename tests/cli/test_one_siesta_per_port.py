"""One Siesta per port, with real processes on this machine: a ``siesta serve`` runs with a
model loaded; a second ``siesta serve`` (of another config dir) and a tray app (offscreen,
of the same config dir) on its port each say who runs there and exit 1 before they start
anything, and the first keeps serving, its model still loaded. (The tray app first, then a
``siesta serve``: tests/ui/test_app.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.core.models.backend import free_port
from tests.portable import POSIX, pid_alive

REPO = Path(__file__).resolve().parents[2]


def siesta(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def wait_healthy(proc: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(base + "/api/v1/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "siesta serve did not start"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_a_second_serve_and_a_tray_app_on_the_port_say_who_runs_there_and_exit_1(paths, write_recipe,
                                                                                   tmp_path: Path) -> None:
    write_recipe("tiny", fake=[])
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(siesta("serve", "--config-dir", str(paths.config_dir), "--port", str(port),
                                    "--stop-timeout", "3"),
                             cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(first, base)
        model = httpx.post(base + "/api/v1/load", json={"model": "tiny"}, timeout=30).json()
        running = f"Siesta is already running on 127.0.0.1:{port} (pid {first.pid}), as `siesta serve`"

        second = subprocess.run(siesta("serve", "--config-dir", str(tmp_path / "other"), "--port", str(port)),
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert f"siesta: {running}; stop it, or choose another port with --port or SIESTA_PORT " \
               "(setting 'port', from flag --port)" in second.stderr

        pytest.importorskip("PySide6")
        tray = subprocess.run(siesta("--config-dir", str(paths.config_dir), "--port", str(port)), cwd=REPO,
                              env={**env, "QT_QPA_PLATFORM": "offscreen"}, capture_output=True, text=True, timeout=60)
        assert tray.returncode == 1, tray.stderr
        assert running in tray.stderr

        assert httpx.get(base + "/api/v1/health", timeout=2).status_code == 200  # the first, undisturbed
        assert pid_alive(model["pid"])
        tiny = httpx.get(base + "/api/v1/models/tiny", timeout=5).json()
        assert tiny["state"] == model["state"] and tiny["pid"] == model["pid"]
    finally:
        first.send_signal(signal.SIGTERM)  # on Windows a TerminateProcess: no graceful stop to assert there
        _out, err = first.communicate(timeout=30)
    if POSIX:
        assert first.returncode == 0, err
        assert not pid_alive(model["pid"])


def test_hold_port_says_who_holds_it_in_the_words_of_the_binds_refusal(paths, make_settings, caplog,
                                                                       monkeypatch) -> None:
    from app.core.config import instance_lock
    from app.runtime import PortInUse, hold_port

    port = free_port()
    first = hold_port(paths, make_settings(port=port, host="0.0.0.0"), "tray")
    try:
        with pytest.raises(PortInUse) as info:
            hold_port(paths, make_settings(port=port), "serve")
        assert str(info.value) == (f"Siesta is already running on 0.0.0.0:{port} (pid {os.getpid()}), as the tray "
                                   "app; stop it, or choose another port with --port or SIESTA_PORT "
                                   "(setting 'port', from flag --port)")
    finally:
        assert first is not None
        first.release()

    def no_dir() -> Path:
        raise PermissionError(13, "Permission denied", "/run/user/1000/siesta")

    monkeypatch.setattr(instance_lock, "lock_dir", no_dir)
    assert hold_port(paths, make_settings(port=port), "serve") is None
    assert f"cannot take the lock on port {port}" in caplog.text
