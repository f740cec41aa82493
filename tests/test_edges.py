"""Paths that had no test: the log size bound, SIESTA_CONFIG_DIR, the unknown-key warning,
the 502 after stop_timeout, the crash-loop reset by a recipe edit, and a stale model
reloading with its new arguments."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from app.core.config.paths import Paths
from app.core.models.backend import BoundedLog
from app.core.models.model import ModelState, ModelUnavailable

pytestmark = pytest.mark.timeout(60)


def test_the_model_log_stays_within_its_bound_with_one_rotated_copy(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "a.log"
    log = BoundedLog(path, max_bytes=1000)
    for i in range(50):
        log.write(f"line {i:03d} ".encode() + b"x" * 80 + b"\n")
    log.close()
    rotated = path.with_suffix(".log.1")
    assert path.stat().st_size <= 1000 and rotated.exists() and rotated.stat().st_size <= 1000
    assert "line 049" in path.read_text()
    assert not list(path.parent.glob("*.2"))  # one rotated copy, never more
    assert "line 049" in log.tail_text()


def test_siesta_config_dir_is_used_when_no_flag_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIESTA_CONFIG_DIR", str(tmp_path / "from-env"))
    assert Paths.resolve().config_dir == tmp_path / "from-env"
    assert Paths.resolve(tmp_path / "from-flag").config_dir == tmp_path / "from-flag"  # the flag wins


async def test_unknown_recipe_keys_are_kept_and_warned_about(manager_factory, write_recipe, caplog) -> None:
    write_recipe("a", fake=[], flavour="vanilla")
    with caplog.at_level(logging.WARNING, logger="app.core.manager"):
        manager = await manager_factory()
    assert "unknown keys kept as they are: flavour" in caplog.text
    assert manager.get("a").recipe is not None


async def test_a_request_still_running_after_stop_timeout_gets_502(front_door, write_recipe) -> None:
    write_recipe("slow", fake=["--delay", "5"])
    manager, http, url = await front_door(stop_timeout=0.5)
    request = asyncio.create_task(http.post(f"{url}/v1/chat/completions", json={"model": "slow"}))
    model = manager.get("slow")
    deadline = time.monotonic() + 10
    while model.in_flight == 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await manager.unload("slow")  # drains for stop_timeout, then stops the server
    assert time.monotonic() - started < 3
    resp = await asyncio.wait_for(request, 10)
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "backend_error"


async def test_a_recipe_edit_clears_a_crash_loop(manager_factory, write_recipe) -> None:
    path = write_recipe("crashy", fake=["--exit-at-start", "1"])
    manager = await manager_factory(load_timeout=5)
    model = manager.get("crashy")
    for _ in range(3):
        with pytest.raises(ModelUnavailable):
            await manager.load("crashy")  # a manual load skips the back-off
    assert model.crash_loop
    with pytest.raises(ModelUnavailable) as refused:
        await model.acquire()
    assert refused.value.code == "crash_loop"
    write_recipe("crashy", fake=[])  # fixed by hand
    manager._reload_recipe_file(path)
    assert not model.crash_loop
    lease = await model.acquire()
    lease.release()
    assert model.state is ModelState.READY


async def test_a_stale_model_reloads_with_its_new_arguments(manager_factory, write_recipe) -> None:
    path = write_recipe("a", fake=[])
    manager = await manager_factory()
    model = manager.get("a")
    (await model.acquire()).release()
    first_pid = model.pid
    write_recipe("a", fake=["--chunks", "7"])
    manager._reload_recipe_file(path)
    assert model.stale and model.pid == first_pid  # the running server is kept until it unloads
    await manager.unload("a")
    lease = await model.acquire()
    try:
        assert not model.stale and lease.process.pid != first_pid
        assert "--chunks" in lease.process.spec.argv and "7" in lease.process.spec.argv
    finally:
        lease.release()
