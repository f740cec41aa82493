"""A model's log (app/core/models/server_log.py) rotates past its bound even where the OS
refuses to move a file another program holds open: Windows, while the log viewer or an editor
reads it. Run here with ``os.replace`` refusing as Windows does (tests/fakes/windows_fs.py);
the files are real."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.core.models.server_log import BoundedLog
from tests.fakes.windows_fs import ReplaceRefusedWhileOpen


@pytest.fixture
def windows_replace(monkeypatch: pytest.MonkeyPatch) -> ReplaceRefusedWhileOpen:
    replace = ReplaceRefusedWhileOpen()
    monkeypatch.setattr(os, "replace", replace)
    return replace


def line(i: int) -> bytes:
    return f"line {i:02d} ".encode() + b"x" * 41 + b"\n"  # 50 bytes


def test_a_log_held_open_by_a_reader_is_copied_and_emptied_and_goes_on(
        tmp_path: Path, windows_replace: ReplaceRefusedWhileOpen) -> None:
    path = tmp_path / "logs" / "m.log"
    log = BoundedLog(path, max_bytes=1000)
    log.write(b"first\n")
    with path.open("rb") as viewer:  # the log viewer, reading
        for i in range(30):  # 1506 bytes: one rotation, after line 18
            log.write(line(i))
        assert windows_replace.refused == [str(path)]  # Windows would not move it
        assert viewer.read().startswith(b"line 19 ")  # the same file, emptied and written again
    log.note("exited with code 0")
    log.close()
    rotated = path.with_suffix(".log.1")
    assert log.error is None and path.stat().st_size <= 1000 and rotated.stat().st_size <= 1000
    lines = (rotated.read_text() + path.read_text()).splitlines()
    assert lines[:31] == ["first"] + [line(i).decode().rstrip("\n") for i in range(30)]
    assert len(lines) == 32 and lines[-1].endswith("exited with code 0")
    assert rotated.read_text().splitlines()[-1].startswith("line 18")

    # no holder: the log is moved, as on Linux
    log = BoundedLog(path, max_bytes=1000)
    for i in range(30):
        log.write(line(i))
    log.close()
    assert windows_replace.refused == [str(path)] and windows_replace.done
    assert set(windows_replace.done) == {(str(path), str(rotated))}


def test_a_large_log_left_by_the_last_run_is_rotated_while_held(tmp_path: Path,
                                                                windows_replace: ReplaceRefusedWhileOpen) -> None:
    """A model started again while its viewer is open on last run's log, past the bound: the
    new server's log opens (it was: cannot open the log, and the whole run unlogged)."""
    path = tmp_path / "m.log"
    path.write_bytes(line(0) * 30)
    with path.open("rb"):
        log = BoundedLog(path, max_bytes=1000)
        log.write(b"starting again\n")
        log.close()
    assert windows_replace.refused == [str(path)]
    assert path.read_bytes() == b"starting again\n" and path.with_suffix(".log.1").read_bytes() == line(0) * 30
