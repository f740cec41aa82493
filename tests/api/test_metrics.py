"""``GET /metrics`` and ``GET /api/v1/history`` after a scripted run with fake models: every
counter has the value the run implies, parsed with prometheus_client's own parser; memory
given back is the measured bytes times the time unloaded (an injected clock moves an hour
on); a request for 100 made-up models adds no label; the guard covers /metrics; and every
PromQL expression of the Grafana dashboard names a metric a real scrape returns."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.config.clock import Clock
from app.core.models.model import ModelState, UnloadReason
from tests.fakes.remote import chat, get_json, until

pytestmark = pytest.mark.timeout(90)

DASHBOARD = Path(__file__).resolve().parents[2] / "packaging" / "grafana" / "siesta.json"
HOUR = 3600.0


class MovableClock(Clock):
    """Today's local noon plus the real time gone by, plus what the test moves it on by."""

    def __init__(self) -> None:
        base = dt.datetime.combine(dt.date.today(), dt.time(12)).timestamp()
        started = time.monotonic()
        self.offset = 0.0
        super().__init__(wall=lambda: base + self.offset + (time.monotonic() - started), max_slice=0.1)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _labels(samples: dict, name: str, label: str) -> set[str]:
    return {dict(key)[label] for (n, key) in samples if n == name}


async def _scrape(http: Any, url: str) -> str:
    async with http.get(url + "/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        return await resp.text()


async def test_a_scripted_run_shows_in_every_counter(front_door, write_recipe, event_log):
    write_recipe("alpha", fake=["--exit-after", "2"])  # its second request crashes it
    write_recipe("beta", unload_timeout="30s")  # unloaded for idleness
    write_recipe("gamma")  # unloaded for memory pressure
    write_recipe("broken", fake=["--exit-at-start", "1"])  # its load fails
    clock = MovableClock()
    manager, http, url = await front_door(clock=clock, free_memory_floor="off", memory_budget="off",
                                         max_loaded_models=0)
    events = event_log(manager)

    for name in ("alpha", "beta", "gamma"):
        assert (await chat(http, url, name))[0] == 200
        await events.wait_for(name, "measured", past=True)
    assert (await chat(http, url, "broken"))[0] == 503
    status, _ = await chat(http, url, "alpha")
    assert status == 502
    await until(lambda: manager.get("alpha").state is ModelState.FAILED, what="alpha's crash")

    clock.offset += 31  # beta's 30 s run out
    await until(lambda: manager.get("beta").state is ModelState.UNLOADED, what="beta's idle unload")
    await manager.get("gamma").unload(UnloadReason.MEMORY_PRESSURE)
    for i in range(100):  # names that are no model: never a label
        async with http.post(url + "/v1/chat/completions", json={"model": f"made-up-{i}", "messages": []}) as resp:
            assert resp.status == 404
    clock.offset += HOUR

    before = clock.now()
    samples = _samples(await _scrape(http, url))
    after = clock.now()

    # loads by result, and their durations
    for name in ("alpha", "beta", "gamma"):
        assert _value(samples, "siesta_loads_total", model=name, result="ok") == 1
        assert _value(samples, "siesta_load_duration_seconds_count", model=name, result="ok") == 1
        assert _value(samples, "siesta_load_duration_seconds_bucket", model=name, result="ok", le="+Inf") == 1
    assert _value(samples, "siesta_loads_total", model="broken", result="failed") == 1
    assert _labels(samples, "siesta_loads_total", "result") == {"ok", "failed"}
    # unloads by reason
    unloads = {(dict(k)["model"], dict(k)["reason"]): v for (n, k), v in samples.items() if n == "siesta_unloads_total"}
    assert unloads == {("alpha", "crashed"): 1, ("beta", "idle"): 1, ("gamma", "memory_pressure"): 1}
    # models loaded, requests in flight
    assert _value(samples, "siesta_models_loaded") == 0
    assert _value(samples, "siesta_model_requests_in_flight", model="alpha") == 0
    # requests by model and status class, and their time to first byte
    assert _value(samples, "siesta_requests_total", model="alpha", status="2xx") == 1
    assert _value(samples, "siesta_requests_total", model="alpha", status="5xx") == 1
    assert _value(samples, "siesta_requests_total", model="broken", status="5xx") == 1
    assert _value(samples, "siesta_requests_total", model="none", status="4xx") == 100
    assert _value(samples, "siesta_request_first_byte_seconds_count", model="alpha") == 2
    models = {"alpha", "beta", "gamma", "broken", "none"}
    assert _labels(samples, "siesta_requests_total", "model") <= models
    assert _labels(samples, "siesta_request_first_byte_seconds_count", "model") <= models
    assert "siesta_device_memory_total_bytes" in {n for n, _ in samples}

    # memory given back: the bytes held at the unload times the time since, per device
    await manager.metrics.history.flushed()
    lines = [json.loads(line) for line in manager.paths.history_file.read_text().splitlines()]
    unload_lines = {line["model"]: line for line in lines if line["event"] == "unload"}
    assert {m: line["reason"] for m, line in unload_lines.items()} == {
        "alpha": "crashed", "beta": "idle", "gamma": "memory_pressure"}
    assert [line["result"] for line in lines if line["event"] == "load"].count("ok") == 3
    for name in ("beta", "gamma"):
        line = unload_lines[name]
        assert line["bytes"]["ram"] > 1_000_000  # a measured resident size
        for device, held in line["bytes"].items():
            value = _value(samples, "siesta_memory_given_back_byte_seconds_total", model=name, device=device)
            assert held * (before - line["time"]) <= value <= held * (after - line["time"])
            assert value == pytest.approx(held * HOUR, rel=0.02)
    assert _labels(samples, "siesta_memory_given_back_byte_seconds_total", "model") == {"beta", "gamma"}

    # the same in the management API: today's and the whole history's, and each model's
    listed = await get_json(http, url + "/api/v1/models")
    expected = sum(held * (clock.now() - unload_lines[m]["time"])
                   for m in ("beta", "gamma") for held in unload_lines[m]["bytes"].values())
    assert listed["given_back"]["today"] == pytest.approx(expected, rel=0.01)
    assert listed["given_back"]["total"] == pytest.approx(listed["given_back"]["today"])
    by_name = {m["name"]: m for m in listed["models"]}
    assert by_name["beta"]["given_back"] > 0 and by_name["alpha"]["given_back"] == 0

    # and a day of the history
    day = await get_json(http, url + "/api/v1/history?day=today")
    shares = {m["name"]: m for m in day["models"]}
    assert shares["beta"]["loads"] == 1 and shares["broken"]["loads_failed"] == 1
    assert 0 < shares["beta"]["idle"] <= shares["beta"]["loaded"] < 0.01
    assert shares["beta"]["unloaded"] == pytest.approx(1 - shares["beta"]["loaded"])
    async with http.get(url + "/api/v1/history?day=someday") as resp:
        assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_day"


async def test_a_remote_model_is_counted_by_its_remote_only(front_door, paths):
    """A remote may list 10,000 models: its traffic is one label, remote:<NAME>."""
    from aiohttp import web

    from tests.fakes.remote import ScriptedServer

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": f"m{i}", "object": "model"} for i in range(50)]})

    async def completion(request: web.Request) -> web.Response:
        return web.json_response({"choices": []})

    remote = ScriptedServer([web.get("/v1/models", models), web.post("/v1/chat/completions", completion)])
    remote_url = await remote.start()
    try:
        paths.settings_file.write_text(f'[remotes.box]\nkind = "openai"\nurl = "{remote_url}"\n')
        manager, http, url = await front_door()
        await until(lambda: any(r["status"] == "ok" for r in manager.remotes.describe()), what="the remote")
        for i in range(20):
            assert (await chat(http, url, f"box/m{i}"))[0] == 200
        samples = _samples(await _scrape(http, url))
        assert _value(samples, "siesta_requests_total", model="remote:box", status="2xx") == 20
        assert _labels(samples, "siesta_requests_total", "model") <= {"remote:box", "none"}
        assert _value(samples, "siesta_remote_up", remote="box") == 1
        assert _value(samples, "siesta_model_requests_in_flight", model="remote:box") == 0
    finally:
        await remote.stop()


async def test_metrics_are_guarded_like_the_management_api(front_door):
    _manager, http, url = await front_door(api_key="sesame")
    async with http.get(url + "/metrics") as resp:
        assert resp.status == 401
    async with http.get(url + "/metrics", headers={"Origin": "http://evil.example"}) as resp:
        assert resp.status == 403
    async with http.get(url + "/metrics", headers={"Authorization": "Bearer sesame"}) as resp:
        assert resp.status == 200 and "siesta_models_loaded" in await resp.text()


async def test_openmetrics_when_the_scraper_asks_for_it(front_door):
    _manager, http, url = await front_door()
    async with http.get(url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as resp:
        assert resp.status == 200 and resp.content_type == "application/openmetrics-text"
        assert (await resp.text()).rstrip().endswith("# EOF")


# ---- the Grafana dashboard ---------------------------------------------------------------------

PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are neither a function or
    aggregation (followed by "("), a keyword, a label (inside {} or by/without ()) nor a range."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\boffset\s+\S+", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[match.end():].lstrip().startswith("(") or match.group().lower() in PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def _exported_names(text: str) -> set[str]:
    """Every sample name a scrape can have, from its families' types (a family with no
    sample yet still says its name and type)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
                "summary": ("_sum", "_count", "")}
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def _expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for v in node.values() for e in _expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expressions(v)]
    return []


def test_the_promql_reader_finds_metric_names():
    expr = ('histogram_quantile(0.95, sum by (le, model) (rate(siesta_request_first_byte_seconds_bucket'
            '{model=~"a|b"}[$__rate_interval]))) / on(model) group_left sum(siesta_x offset 5m) > bool 1e3')
    assert promql_metric_names(expr) == {"siesta_request_first_byte_seconds_bucket", "siesta_x"}


async def test_every_expression_of_the_grafana_dashboard_names_a_metric_siesta_exports(front_door):
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = _expressions(dashboard)
    assert len(dashboard["panels"]) >= 4 and len(expressions) >= 4
    _manager, http, url = await front_door()
    async with http.get(url + "/api/v1/health"):
        pass
    exported = _exported_names(await _scrape(http, url))
    for expr in expressions:
        names = promql_metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= exported, f"{expr!r} names {sorted(names - exported)}, which Siesta does not export"


async def test_a_scrape_waits_for_nothing(front_door):
    """A scrape reads figures; it starts no load and takes well under a second."""
    manager, http, url = await front_door()
    started = asyncio.get_running_loop().time()
    await _scrape(http, url)
    assert asyncio.get_running_loop().time() - started < 2
    assert all(m.process is None for m in manager.models.values())
