"""The measurements: each coroutine measures one figure of docs/performance.md beside its baseline.

Conventions (on this 2-core machine llama-server's compute threads and Siesta fight for the
same cores, and without these the figures swing by 50% from run to run): llama-server runs
with ``-t 1``, one backend process at a time; direct and proxied requests alternate (the
order flips every pair), through one aiohttp client with the same settings for both; figures
are medians and p99 over many repetitions, and ratios are taken against a baseline measured
in the same run, minutes apart at most.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .util import (
    JSON_HEADERS,
    REPO,
    LlamaServer,
    Router,
    Siesta,
    chat_body,
    llama_recipe,
    median,
    ms,
    p50,
    p99,
    pct,
    process_gone,
    timed_post,
    timed_stream,
    wait_http_ok,
)

LLAMA_ARGS = ["-t", "1", "--ctx-size", "4096", "-np", "8"]
MODEL = "tiny"


@dataclass
class Row:
    """One line of the results table."""

    figure: str
    metric: str
    value: float
    unit: str
    baseline_label: str = "-"
    baseline: float | None = None
    compare: str | None = None  # "ratio" (value / baseline) or "delta" (value - baseline)
    target: str = "-"
    ok: bool | None = None
    note: str = ""

    @property
    def relation(self) -> float | None:
        if self.baseline is None or self.compare is None:
            return None
        if self.compare == "ratio":
            return self.value / self.baseline if self.baseline else math.nan
        return self.value - self.baseline


@dataclass
class Ctx:
    """What every figure needs: the client, the scale, and where things are."""

    session: aiohttp.ClientSession
    work: Path
    llama_server: Path
    model_file: Path
    models_dir: Path
    quick: bool
    rows: list[Row] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def scale(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def log(self, message: str) -> None:
        print(f"  {message}", flush=True)


def _chat_url(base: str) -> str:
    return base + "/v1/chat/completions"


async def alternate(ctx: Ctx, n: int, a_url: str, b_url: str, body: bytes) -> tuple[list[float], list[float]]:
    """``n`` requests to each of ``a_url`` and ``b_url``, alternating, the order flipping every pair."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        if i % 2 == 0:
            a.append(await timed_post(ctx.session, a_url, body))
            b.append(await timed_post(ctx.session, b_url, body))
        else:
            b.append(await timed_post(ctx.session, b_url, body))
            a.append(await timed_post(ctx.session, a_url, body))
    return a, b


async def _check_tokens(ctx: Ctx, url: str, body: bytes, expected: int) -> None:
    async with ctx.session.post(url, data=body, headers=JSON_HEADERS) as resp:
        data = json.loads(await resp.read())
    got = data.get("usage", {}).get("completion_tokens")
    if got != expected:
        raise RuntimeError(f"{url}: expected {expected} completion tokens, got {got}: {str(data)[:300]}")


# ---- 1. non-streaming completion latency, Siesta and llama.cpp's router ---------------------------


async def completion_latency(ctx: Ctx, siesta: Siesta, router: Router) -> None:
    """16-token completions: direct vs Siesta, then (its own backend) direct vs the router, in rounds."""
    rounds = ctx.scale(3, 2)
    n = ctx.scale(200, 75)
    body = chat_body(MODEL, 16)
    s_direct: list[float] = []
    s_proxy: list[float] = []
    r_direct: list[float] = []
    r_proxy: list[float] = []
    for r in range(rounds):
        direct = await siesta.backend_url(ctx.session, MODEL)
        proxied = _chat_url(siesta.url)
        await _check_tokens(ctx, proxied, body, 16)
        await alternate(ctx, 20, _chat_url(direct), proxied, body)  # warm-up
        d, p = await alternate(ctx, n, _chat_url(direct), proxied, body)
        s_direct += d
        s_proxy += p
        await siesta.unload(ctx.session, MODEL)

        routed = _chat_url(router.url)
        await _check_tokens(ctx, routed, body, 16)  # loads the router's child
        direct = await router.child_url(ctx.session, MODEL)
        await alternate(ctx, 20, _chat_url(direct), routed, body)
        d, p = await alternate(ctx, n, _chat_url(direct), routed, body)
        r_direct += d
        r_proxy += p
        await router.unload(ctx.session, MODEL)
        ctx.log(f"round {r + 1}/{rounds}: Siesta p50 {ms(p50(p)):.2f} ms / direct {ms(p50(d)):.2f} ms")
    ctx.samples.update(llama_direct=s_direct, llama_siesta=s_proxy, router_direct=r_direct, router=r_proxy)
    fig = "16-token completion latency"
    for label, q, limit in (("p50", 50, 1.15), ("p99", 99, 1.5)):
        base, val = ms(pct(s_direct, q)), ms(pct(s_proxy, q))
        ctx.add(Row(fig, f"{label}, through Siesta", val, "ms", "direct to llama-server", base, "ratio",
                    f"<= {limit}x", val / base <= limit))
    for label, q in (("p50", 50), ("p99", 99)):
        base, val = ms(pct(r_direct, q)), ms(pct(r_proxy, q))
        ctx.add(Row(fig, f"{label}, through llama.cpp router", val, "ms", "direct to the router's child",
                    base, "ratio", "(reference)"))
    for label, q in (("p50", 50), ("p99", 99)):
        siesta_added = ms(pct(s_proxy, q) - pct(s_direct, q))
        router_added = ms(pct(r_proxy, q) - pct(r_direct, q))
        ok = siesta_added <= router_added
        ctx.add(Row(fig, f"{label} added: Siesta vs router", siesta_added, "ms", "router's added latency",
                    router_added, "delta", "Siesta <= router", ok,
                    note="added = proxied minus direct, each against its own backend"))


# ---- 2. added latency over a zero-work backend; client libraries --------------------------------


async def fake_overhead(ctx: Ctx, siesta: Siesta) -> None:
    n = ctx.scale(2000, 500)
    body = chat_body("fake", 1)
    direct = _chat_url(await siesta.backend_url(ctx.session, "fake"))
    proxied = _chat_url(siesta.url)
    await alternate(ctx, 100, direct, proxied, body)
    d, p = await alternate(ctx, n, direct, proxied, body)
    ctx.samples.update(fake_direct=d, fake_siesta=p)
    fig = "added latency, zero-work backend"
    ctx.add(Row(fig, "p50 through Siesta", ms(p50(p)), "ms", "direct to the fake", ms(p50(d)), "delta",
                "<= +1.0 ms", ms(p50(p) - p50(d)) <= 1.0))
    ctx.add(Row(fig, "p99 through Siesta", ms(p99(p)), "ms", "direct to the fake", ms(p99(d)), "delta"))
    ctx.log(f"fake: direct p50 {ms(p50(d)):.3f} ms, Siesta {ms(p50(p)):.3f} ms")
    await client_libraries(ctx, direct, proxied, body)
    await siesta.unload(ctx.session, "fake")


async def client_libraries(ctx: Ctx, direct: str, proxied: str, body: bytes) -> None:
    """aiohttp vs httpx as the client, sequential requests to the zero-work fake.

    It repeats, on this suite's backend, the measurement that chose aiohttp: to a local
    llama-server ``/health`` with 8 concurrent tasks, aiohttp's client made about 5,000 req/s
    and httpx's AsyncClient 500-550, so httpx adds about 1.5-2 ms per request and aiohttp
    about 0.4 ms.
    """
    try:
        import httpx
    except ImportError:
        return
    n = ctx.scale(600, 200)
    fig = "client library (zero-work fake, sequential)"
    async with httpx.AsyncClient(timeout=60) as client:
        async def hx(url: str) -> float:
            t0 = time.perf_counter()
            resp = await client.post(url, content=body, headers=JSON_HEADERS)
            resp.read()
            resp.raise_for_status()
            return time.perf_counter() - t0

        for _ in range(50):
            await hx(direct)
            await hx(proxied)
        results: dict[str, list[float]] = {"aiohttp direct": [], "httpx direct": [], "aiohttp via Siesta": [],
                                           "httpx via Siesta": []}
        for i in range(n):
            results["aiohttp direct"].append(await timed_post(ctx.session, direct, body))
            results["httpx direct"].append(await hx(direct))
            results["aiohttp via Siesta"].append(await timed_post(ctx.session, proxied, body))
            results["httpx via Siesta"].append(await hx(proxied))
    base = ms(p50(results["aiohttp direct"]))
    for name in ("httpx direct", "aiohttp via Siesta", "httpx via Siesta"):
        ctx.add(Row(fig, f"p50, {name}", ms(p50(results[name])), "ms", "aiohttp direct", base, "delta",
                    "(reference)"))


# ---- 3. streaming: bench/stream_figures.py ----------------------------------------------------


# ---- 4. requests/s -----------------------------------------------------------------------------


async def throughput(ctx: Ctx, siesta: Siesta, clients: int = 16) -> None:
    body = chat_body(MODEL, 1)
    direct = _chat_url(await siesta.backend_url(ctx.session, MODEL))
    proxied = _chat_url(siesta.url)
    duration = ctx.scale(4.0, 1.0)
    rounds = ctx.scale(3, 2)

    async def run(url: str, seconds: float) -> tuple[int, float, list[float]]:
        latencies: list[float] = []
        t0 = time.perf_counter()
        stop = t0 + seconds

        async def worker() -> None:
            while time.perf_counter() < stop:
                latencies.append(await timed_post(ctx.session, url, body))

        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(latencies), time.perf_counter() - t0, latencies

    await run(direct, 0.5)
    await run(proxied, 0.5)
    totals = {"direct": [0, 0.0], "siesta": [0, 0.0]}
    for r in range(rounds):
        order = [("direct", direct), ("siesta", proxied)]
        if r % 2:
            order.reverse()
        for name, url in order:
            count, elapsed, _ = await run(url, duration)
            totals[name][0] += count
            totals[name][1] += elapsed
    d_rps = totals["direct"][0] / totals["direct"][1]
    s_rps = totals["siesta"][0] / totals["siesta"][1]
    ctx.add(Row(f"throughput, {clients} clients, 1-token completions", "requests/s through Siesta", s_rps, "req/s",
                "direct", d_rps, "ratio", ">= 0.6x", s_rps / d_rps >= 0.6))
    ctx.log(f"throughput: {s_rps:.0f} vs {d_rps:.0f} req/s")


# ---- 5. cold start ---------------------------------------------------------------------------------


async def cold_start(ctx: Ctx, siesta: Siesta, router: Router) -> None:
    """Request to first token for an unloaded model: Siesta, by hand (poll /health every 10 ms), router."""
    reps = ctx.scale(20, 6)
    body = chat_body(MODEL, 16, stream=True)
    results: dict[str, list[float]] = {"siesta": [], "hand": [], "router": [], "hand_output": []}

    async def via_siesta() -> float:
        await siesta.unload(ctx.session, MODEL)
        return (await timed_stream(ctx.session, _chat_url(siesta.url), body))["ttft"]

    async def by_hand() -> float:
        server = LlamaServer(ctx.work, ctx.llama_server, ctx.model_file, LLAMA_ARGS)
        try:
            t0 = time.perf_counter()
            server.start()
            await wait_http_ok(ctx.session, server.url + "/health", 30, proc=server.proc, interval=0.010,
                               log=server.log)
            result = await timed_stream(ctx.session, _chat_url(server.url), body)
            return result["ttft"] + (time.perf_counter() - t0 - result["total"])
        finally:
            server.stop()

    async def by_hand_on_output() -> float:
        """By hand, but probing /health as soon as the server prints a line (and every 10 ms): what
        Siesta would get by waking its health probe on its backend's output (docs/performance.md)."""
        server = LlamaServer(ctx.work, ctx.llama_server, ctx.model_file, LLAMA_ARGS)
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*server.argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                                                    start_new_session=True)
        printed = asyncio.Event()

        async def pump() -> None:
            assert proc.stdout is not None
            while await proc.stdout.read(65536):
                printed.set()

        pumping = asyncio.create_task(pump())
        probe = aiohttp.ClientTimeout(total=2.0)
        try:
            while True:
                try:
                    async with ctx.session.get(server.url + "/health", timeout=probe) as resp:
                        await resp.read()
                        if resp.status == 200:
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    pass
                if proc.returncode is not None:
                    raise RuntimeError("llama-server exited while loading")
                printed.clear()
                try:
                    await asyncio.wait_for(printed.wait(), 0.010)
                except asyncio.TimeoutError:
                    pass
            result = await timed_stream(ctx.session, _chat_url(server.url), body)
            return result["ttft"] + (time.perf_counter() - t0 - result["total"])
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except asyncio.TimeoutError:
                    proc.kill()
                    await proc.wait()
            pumping.cancel()

    async def via_router() -> float:
        await router.unload(ctx.session, MODEL)
        return (await timed_stream(ctx.session, _chat_url(router.url), body))["ttft"]

    runners = [("siesta", via_siesta), ("hand", by_hand), ("router", via_router), ("hand_output", by_hand_on_output)]
    # make sure each starts from "unloaded" and has run once (page cache, first-use costs)
    await via_siesta()
    await siesta.unload(ctx.session, MODEL)
    await by_hand()
    await via_router()
    await router.unload(ctx.session, MODEL)
    await by_hand_on_output()
    for i in range(reps):
        order = runners[i % len(runners):] + runners[:i % len(runners)]
        for name, fn in order:
            results[name].append(await fn())
        await siesta.unload(ctx.session, MODEL)
        await router.unload(ctx.session, MODEL)
    ctx.samples.update(cold_siesta=results["siesta"], cold_hand=results["hand"], cold_router=results["router"],
                       cold_hand_output=results["hand_output"])
    fig = "cold start, request to first token"
    hand50, sie50, rou50 = (ms(p50(results[k])) for k in ("hand", "siesta", "router"))
    ctx.add(Row(fig, "p50, Siesta", sie50, "ms", "by hand, health polled every 10 ms", hand50, "delta",
                "<= +10 ms", sie50 - hand50 <= 10.0))
    ctx.add(Row(fig, "p50, llama.cpp router", rou50, "ms", "by hand, health polled every 10 ms", hand50, "delta",
                "(reference)"))
    ctx.add(Row(fig, "p50, Siesta vs router", sie50, "ms", "router", rou50, "delta", "Siesta <= router",
                sie50 <= rou50))
    out50 = ms(p50(results["hand_output"]))
    ctx.add(Row(fig, "p50, by hand, probing on output (the proposal)", out50, "ms", "router", rou50, "delta",
                "(reference)", note="health probed when the server prints a line, else every 10 ms"))
    worst = {k: ms(max(v)) for k, v in results.items()}
    ctx.add(Row(fig, f"worst of {reps}, Siesta vs router", worst["siesta"], "ms", "router", worst["router"],
                "delta", "(reference)", note=f"by hand: worst {worst['hand']:.1f} ms"))
    ctx.log(f"cold start p50: Siesta {sie50:.1f}, by hand {hand50:.1f}, router {rou50:.1f}, "
            f"by hand probing on output {out50:.1f} ms")


# ---- 6. unload precision ------------------------------------------------------------------------


async def unload_precision(ctx: Ctx, siesta: Siesta, name: str = "tiny1s") -> None:
    reps = ctx.scale(10, 4)
    body = chat_body(name, 4)
    lags: list[float] = []
    for _ in range(reps):
        await timed_post(ctx.session, _chat_url(siesta.url), body)
        model = (await siesta.models(ctx.session))[name]
        while model["unload_at"] is None:
            await asyncio.sleep(0.005)
            model = (await siesta.models(ctx.session))[name]
        unload_at, pid = model["unload_at"], model["pid"]
        deadline = time.time() + 30
        while not process_gone(pid):
            if time.time() > deadline:
                raise RuntimeError(f"{name} (pid {pid}) still running 30 s after its unload_at")
            await asyncio.sleep(0.005)
        lags.append(time.time() - unload_at)
    ctx.samples["unload_lag"] = lags
    fig = "unload precision (1 s timeout, graceful backend)"
    ctx.add(Row(fig, "deadline to process exit, p50", ms(p50(lags)), "ms", target="(reference)"))
    ctx.add(Row(fig, f"deadline to process exit, worst of {reps}", ms(max(lags)), "ms", target="<= 250 ms",
                ok=max(lags) <= 0.25, note="polled every 5 ms"))
    ctx.log(f"unload lag: p50 {ms(p50(lags)):.1f} ms, worst {ms(max(lags)):.1f} ms")


# ---- 7. idle CPU: bench/idle_figures.py --------------------------------------------------------


# ---- 8. start-up with many recipes; `siesta ps` -------------------------------------------------------


async def startup(ctx: Ctx, recipes: int = 1000) -> None:
    reps = ctx.scale(3, 1)
    ps_reps = ctx.scale(7, 3)
    home = ctx.work / "startup"
    texts = {f"m{i:04d}": llama_recipe(ctx.model_file, LLAMA_ARGS) for i in range(recipes)}
    times: list[float] = []
    siesta: Siesta | None = None
    try:
        for r in range(reps):
            siesta = Siesta(home, texts if r == 0 else {}, llama_server=ctx.llama_server)
            times.append(await siesta.start(ctx.session))
            count = len(await siesta.models(ctx.session))
            if count != recipes:
                raise RuntimeError(f"Siesta lists {count} models, expected {recipes}")
            if r < reps - 1:
                siesta.stop()
        assert siesta is not None
        # `siesta ps` against the running instance (1,000 models)
        ps_argv = [sys.executable, "-m", "app", "--config-dir", str(siesta.config_dir), "--port", str(siesta.port), "ps"]
        ps_times = _wall_times(ps_argv, siesta.env, ps_reps)
        floor = _wall_times([sys.executable, "-c", "pass"], siesta.env, ps_reps)
        ctx.add(Row(f"start-up with {recipes} recipe files", "launch to /api/v1/health answering", ms(median(times)),
                    "ms", target="<= 1000 ms", ok=median(times) <= 1.0, note=f"median of {reps}"))
        ctx.add(Row(f"start-up with {recipes} recipe files", f"`python -m app ps` wall time ({recipes} models)",
                    ms(median(ps_times)), "ms", "`python -c pass`", ms(median(floor)), "delta", "<= 300 ms",
                    median(ps_times) <= 0.3, note=f"median of {ps_reps}"))
        script = Path(sys.executable).parent / "siesta"
        if script.exists():
            st = _wall_times([str(script), "--config-dir", str(siesta.config_dir), "--port", str(siesta.port), "ps"],
                             siesta.env, ps_reps)
            ctx.add(Row(f"start-up with {recipes} recipe files", "`siesta ps` (console script) wall time",
                        ms(median(st)), "ms", target="<= 300 ms", ok=median(st) <= 0.3))
        ctx.notes["ps_import"] = _import_profile(siesta.env)
        ctx.log(f"start-up {ms(median(times)):.0f} ms; ps {ms(median(ps_times)):.0f} ms (python floor {ms(median(floor)):.0f})")
    finally:
        if siesta is not None:
            siesta.stop()


def _wall_times(argv: list[str], env: dict[str, str], reps: int) -> list[float]:
    out = []
    subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    for _ in range(reps):
        t0 = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return out


def _import_profile(env: dict[str, str]) -> list[tuple[str, float]]:
    """The slowest top-level imports of the CLI (``-X importtime``), cumulative ms."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app.cli"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        try:
            cumulative = int(parts[1].strip())
        except ValueError:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            rows.append((name.strip(), cumulative / 1000.0))
    rows.sort(key=lambda r: -r[1])
    return rows[:8]
