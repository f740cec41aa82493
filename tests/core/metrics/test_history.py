"""The history file (app/core/metrics/history.py) and what it says (timeline.py): appends
that never touch earlier lines, rotation at its size keeping one old file, a garbage or
cut-short line skipped, and given-back byte-seconds and day shares from the records."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from app.core.metrics.history import HistoryFile, parse_record
from app.core.metrics.recorder import Recorder
from app.core.metrics.timeline import Timeline, day_bounds, split_by_day

pytestmark = pytest.mark.timeout(30)

NOON = dt.datetime.combine(dt.date.today(), dt.time(12)).timestamp()
GB = 2**30


def _unload(t: float, model: str, reason: str, held: dict[str, int], idle: dict[str, float] | None = None) -> dict:
    return {"time": t, "event": "unload", "model": model, "reason": reason, "bytes": held, "idle": idle or {}}


def _load(t: float, model: str, seconds: float = 0.0, result: str = "ok") -> dict:
    return {"time": t, "event": "load", "model": model, "result": result, "seconds": seconds, "bytes": {}}


async def test_the_file_rotates_at_its_size_keeping_one_old_file(tmp_path: Path):
    history = HistoryFile(tmp_path / "history.jsonl", max_bytes=2000)
    history.read()
    rotations = sum(history.append(_load(NOON + i, f"model{i}")) for i in range(100))
    await history.flushed()
    assert rotations >= 2
    assert history.path.stat().st_size <= 2000 and history.old_path.stat().st_size <= 2000
    old, current = HistoryFile(history.path).read()
    assert [r["model"] for r in old + current] == [f"model{i}" for i in range(100 - len(old) - len(current), 100)]
    assert not list(tmp_path.glob("history.jsonl.2"))  # one old file only


async def test_a_garbage_line_and_a_cut_short_one_are_skipped_and_the_rest_survives(tmp_path: Path):
    history = HistoryFile(tmp_path / "history.jsonl")
    history.read()
    history.append(_load(NOON, "a"))
    await history.flushed()
    with history.path.open("ab") as f:
        f.write(b"this is no json\n{\"time\": 1, \"event\": \"load\"}\n[1, 2]\n\xff\xfe\n")
        f.write(b'{"time": 5, "event": "unload", "model": "a", "rea')  # a crash mid-write: no newline
    history.append(_load(NOON + 10, "b"))
    await history.flushed()
    old, current = HistoryFile(history.path).read()
    assert old == [] and [r["model"] for r in current] == ["a", "b"]
    assert history.path.read_bytes().count(b"\n") == 7  # nothing before was touched; one newline added


def test_a_record_needs_the_fields_its_event_needs():
    assert parse_record(json.dumps({"time": 1.5, "event": "start"})) == {"time": 1.5, "event": "start"}
    assert parse_record(json.dumps(_unload(2, "m", "idle", {"ram": 5}, {"2026-01-02": 3.0})))["bytes"] == {"ram": 5}
    for bad in ({"time": "1", "event": "start"}, {"time": 1, "event": "nap"}, {"time": 1, "event": "load"},
                {**_load(1, "m"), "result": "maybe"}, {**_unload(1, "m", "idle", {"ram": -1})},
                {**_unload(1, "m", "idle", {"ram": True})}, {**_unload(1, "m", "idle", {}), "idle": {"x": 1}},
                {"time": float("nan"), "event": "stop"}):
        assert parse_record(json.dumps(bad)) is None, bad


def test_given_back_runs_from_an_idle_unload_to_the_next_load_or_removal_or_stop():
    timeline = Timeline([
        {"time": NOON - 100, "event": "start"},
        _load(NOON - 50, "a"),
        _unload(NOON, "a", "idle", {"ram": GB, "gpu0": 2 * GB}),
        _load(NOON + 600, "a", seconds=100),  # loading began at +500
        _unload(NOON + 700, "a", "manual", {"ram": GB}),  # not given back: asked for
        _load(NOON + 710, "b"),
        _unload(NOON + 800, "b", "memory_pressure", {"ram": 3 * GB}),
        {"time": NOON + 900, "event": "removed", "model": "b"},
        _load(NOON + 1000, "a"),
        _unload(NOON + 1000, "a", "idle", {"ram": GB}),
        {"time": NOON + 1200, "event": "stop"},
    ])
    assert timeline.given_back(0, NOON + 5000, NOON + 5000, "a") == {"ram": GB * 700, "gpu0": 2 * GB * 500}
    assert timeline.given_back(0, NOON + 5000, NOON + 5000, "b") == {"ram": 3 * GB * 100}
    assert timeline.given_back(NOON + 100, NOON + 200, NOON + 5000, "a") == {"ram": GB * 100, "gpu0": 2 * GB * 100}
    assert timeline.first == NOON - 100


def test_a_run_that_ended_without_stop_ends_its_spans_at_its_last_record():
    timeline = Timeline([
        _load(NOON, "a"),
        _unload(NOON + 60, "a", "idle", {"ram": 10}),
        _load(NOON + 100, "b"),  # Siesta was killed after this line
        {"time": NOON + 7200, "event": "start"},
    ])
    assert timeline.given_back(0, NOON + 9000, NOON + 9000) == {"ram": 10 * 40}
    assert timeline.loaded_seconds("b", 0, NOON + 9000, NOON + 9000) == 0


def test_an_open_span_runs_to_now():
    timeline = Timeline([_load(NOON, "a"), _unload(NOON + 10, "a", "idle", {"ram": 7})])
    assert timeline.given_back(0, NOON + 100, NOON + 100) == {"ram": 7 * 90}
    assert timeline.given_back(0, NOON + 100, NOON + 50) == {"ram": 7 * 40}


def test_a_day_has_loads_and_the_shares_loaded_idle_and_unloaded():
    day = dt.date.today()
    lo, hi = day_bounds(day)
    timeline = Timeline([
        _load(lo + 3600, "a"),
        _load(lo + 3700, "a", result="failed"),
        _unload(lo + 3600 * 7, "a", "idle", {"ram": 100}, {day.isoformat(): 3600 * 3}),
        _load(lo - 3600, "b"),  # loaded since yesterday 23:00, still loaded
    ])
    summary = timeline.day(day, hi, names=["c"])
    by_name = {m["name"]: m for m in summary["models"]}
    assert set(by_name) == {"a", "b", "c"}
    a = by_name["a"]
    whole = hi - lo
    assert (a["loads"], a["loads_failed"]) == (1, 1)
    assert a["loaded"] == pytest.approx(6 * 3600 / whole) and a["idle"] == pytest.approx(3 * 3600 / whole)
    assert a["unloaded"] == pytest.approx(1 - a["loaded"])
    assert a["given_back"] == pytest.approx(100 * (hi - (lo + 3600 * 7)))
    assert by_name["b"]["loaded"] == pytest.approx(1.0) and by_name["b"]["loads"] == 0
    assert by_name["c"] == {"name": "c", "loads": 0, "loads_failed": 0, "loaded": 0.0, "idle": 0.0,
                            "unloaded": 1.0, "given_back": 0.0}
    halfway = timeline.day(day, lo + whole / 2)  # today so far: shares of the time gone by
    assert {m["name"]: m["loaded"] for m in halfway["models"]}["b"] == pytest.approx(1.0)


def test_idle_seconds_are_split_at_local_midnight():
    lo, _ = day_bounds(dt.date.today())
    split = split_by_day(lo - 60, lo + 30)
    yesterday = (dt.date.today() - dt.timedelta(days=1)).isoformat()
    assert split == {yesterday: pytest.approx(60), dt.date.today().isoformat(): pytest.approx(30)}


async def test_the_recorder_mirrors_the_rotation_and_keeps_its_run_counter(tmp_path: Path):
    """Rotation drops what the old file held from today's and the whole history's figures,
    never from the counter of this run (it only grows)."""
    now = [NOON]
    history = HistoryFile(tmp_path / "history.jsonl", max_bytes=600)
    recorder = Recorder(history, lambda: now[0], lambda name: {"ram": 1000})
    recorder.start()

    def event(reason: str, state: str, **extra: object) -> dict:
        return {"reason": reason, "time": now[0], "model": {"name": "m", "state": state, "in_flight": 0,
                                                            "waiting": 0, **extra}}

    for _ in range(6):
        recorder.on_event(event("loading", "loading"))
        now[0] += 2
        recorder.on_event(event("loaded", "ready"))
        now[0] += 10
        recorder.on_event(event("unloading", "unloading"))
        recorder.on_event(event("idle", "unloaded", last_unload_reason="idle"))
        now[0] += 100
    await history.flushed()
    assert history.old_path.exists()
    assert recorder.unloads[("m", "idle")] == 6 and recorder.loads[("m", "ok")].count == 6
    assert recorder.given_back_run() == {("m", "ram"): pytest.approx(1000 * (100 * 5 + 100))}
    old, current = HistoryFile(history.path).read()
    assert recorder.timeline.given_back(0, now[0], now[0]) == Timeline(old + current).given_back(0, now[0], now[0])
    assert recorder.given_back_summary()["total"] < 1000 * 600  # the first spans went with the rotated file


async def test_the_recorder_reads_results_reasons_and_bytes_from_the_events(tmp_path: Path):
    """Results: loaded ok, load_failed failed, load_cancelled cancelled. Reasons: the model's
    last_unload_reason (removed too, told only by the manager's "removed"), crashed when it
    went to failed. Bytes: taken at measured and at unloading (a crash has no unloading: the
    measured ones). A removal ends what the model gave back."""
    now = [NOON]
    held = {"m": {"ram": 10, "gpu0": 20}}
    recorder = Recorder(HistoryFile(tmp_path / "history.jsonl"), lambda: now[0], lambda name: dict(held.get(name, {})))
    recorder.start()

    def tell(reason: str, state: str, **extra: object) -> None:
        recorder.on_event({"reason": reason, "time": now[0], "model": {
            "name": "m", "state": state, "in_flight": 0, "waiting": 0, **extra}})

    for end, state in (("load_failed", "failed"), ("load_cancelled", "unloaded"), ("loaded", "ready")):
        tell("loading", "loading")
        now[0] += 1
        tell(end, state)
    tell("measured", "ready")
    held["m"] = {}  # its server is gone: the figures with it
    tell("crashed", "failed")
    assert {k: h.count for k, h in recorder.loads.items()} == {("m", "failed"): 1, ("m", "cancelled"): 1,
                                                               ("m", "ok"): 1}
    assert recorder.unloads == {("m", "crashed"): 1}
    crash = next(r for r in recorder._current if r["event"] == "unload")
    assert crash["reason"] == "crashed" and crash["bytes"] == {"ram": 10, "gpu0": 20}

    held["m"] = {"ram": 10}
    tell("loading", "loading")
    tell("loaded", "ready")
    tell("unloading", "unloading")
    tell("idle", "unloaded", last_unload_reason="idle")
    now[0] += 50
    tell("loading", "loading")  # its next load ends what it gave back
    tell("loaded", "ready")
    tell("unloading", "unloading")
    tell("idle", "unloaded", last_unload_reason="idle")
    now[0] += 30
    tell("removed", "unloaded", last_unload_reason="idle")  # removal of an unloaded model: ends the span
    now[0] += 1000
    tell("loading", "loading")
    tell("loaded", "ready")
    tell("added", "unloaded", last_unload_reason="removed")  # removed while loaded, then created again
    assert recorder.unloads == {("m", "crashed"): 1, ("m", "idle"): 2, ("m", "removed"): 1}
    assert recorder.given_back_run() == {("m", "ram"): pytest.approx(10 * 80)}
    assert recorder.given_back_of("m") == pytest.approx(10 * 80)
    recorder.stop()
    await recorder.history.flushed()
    events = [r["event"] for r in HistoryFile(tmp_path / "history.jsonl").read()[1]]
    assert events[0] == "start" and events[-1] == "stop" and events.count("removed") == 1
