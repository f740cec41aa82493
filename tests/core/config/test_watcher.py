"""The config watcher: inotify on Linux, watchfiles elsewhere; both deliver debounced changes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.core.config.watcher import ConfigWatcher


@pytest.mark.parametrize("backend", ["_run_inotify", "_run_watchfiles"])
async def test_reports_toml_changes_once_per_burst(tmp_path: Path, backend: str):
    folder = tmp_path / "recipes"
    folder.mkdir()
    batches: list[set[Path]] = []
    got = asyncio.Event()

    def on_change(changed: set[Path]) -> None:
        batches.append(changed)
        got.set()

    watcher = ConfigWatcher([folder], on_change)
    task = asyncio.create_task(getattr(watcher, backend)())
    try:
        for _ in range(20):  # until the watcher is running, touch a probe file
            (folder / "probe.toml").write_text("x = 1\n")
            try:
                await asyncio.wait_for(got.wait(), 0.5)
                break
            except asyncio.TimeoutError:
                continue
        batches.clear()
        got.clear()
        for i in range(5):  # an editor's burst of writes
            (folder / "a.toml").write_text(f"x = {i}\n")
        (folder / ".a.toml.swp").write_text("ignored")
        (folder / "notes.txt").write_text("ignored")
        await asyncio.wait_for(got.wait(), 5)
        await asyncio.sleep(0.3)
        assert batches == [{folder / "a.toml"}]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
