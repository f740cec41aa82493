"""Reload after idle, the price of unloading (``python -m bench --only reload``).

What a request costs when the model it names was unloaded for being idle: time from the
request to its first token, for a synthetic model of about 300 MB (:mod:`bench.big_model`;
the tiny model loads in milliseconds and would say nothing). Four ways, measured in
rounds that rotate their order:

- **Siesta**: the model's recipe has ``unload_timeout = "1s"``; after each request Siesta
  unloads it by itself, and the next request loads it again.
- **By hand** (the baseline): start ``llama-server`` with the same flags, poll ``/health``
  every 10 ms, then send the request; timed from the launch.
- **llama.cpp's router** (``llama-server --models-dir``): it has no idle timeout of its own,
  so its child is unloaded through ``POST /models/unload`` before the request.
- **llama-server's own sleep mode** (``--sleep-idle-seconds 1``): the server stays up and
  frees the model after 1 s idle; the request wakes it. A reference: no process to start.

Each both with the model file in the page cache (as right after it was last used) and
evicted from it (``posix_fadvise(POSIX_FADV_DONTNEED)`` just before the request, checked
with ``mincore``), as after the rest of the machine's work pushed it out. Every way is
brought back to "unloaded" before the next one is measured, so no process holds the file
mapped while it is evicted. Same conventions as :mod:`bench.figures`, whose ``Ctx`` and
``Row`` these use.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Awaitable, Callable

from . import big_model
from .figures import Ctx, Row, _chat_url
from .util import (
    LlamaServer,
    Router,
    Siesta,
    chat_body,
    llama_recipe,
    median,
    ms,
    timed_stream,
    wait_http_ok,
)

NAME = "big"
IDLE = 1.0  # seconds: Siesta's unload_timeout and llama-server's --sleep-idle-seconds
ASLEEP = "server is entering sleeping state"  # what llama-server logs when it goes to sleep


class _Sleeper(LlamaServer):
    """A llama-server in sleep mode; knows from its log whether it has gone to sleep again."""

    def sleeps(self) -> int:
        try:
            return self.log.read_text(errors="replace").count(ASLEEP)
        except OSError:
            return 0


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = time.perf_counter() + timeout
    while not await check():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.01)


def _page_cache(model: Path, state: str) -> float:
    """Puts ``model`` in the page cache state wanted (``warm``: read it; ``evicted``: drop it);
    returns the share of its pages cached after that (-1 when unknown)."""
    if state == "evicted":
        big_model.evict(model)
    else:
        fraction = big_model.cached_fraction(model)
        if fraction is None or fraction < 0.99:
            with open(model, "rb") as fh:
                while fh.read(1 << 24):
                    pass
    fraction = big_model.cached_fraction(model)
    return -1.0 if fraction is None else fraction


async def reload_after_idle(ctx: Ctx) -> None:
    model = big_model.ensure_model()
    size_mb = model.stat().st_size / 2**20
    args = big_model.ARGS
    models_dir = ctx.work / "reload-models"
    models_dir.mkdir(parents=True, exist_ok=True)
    link = models_dir / f"{NAME}.gguf"
    if not link.exists():
        os.symlink(model, link)
    body = chat_body(NAME, 4, stream=True)
    reps = ctx.scale(5, 2)
    siesta = Siesta(ctx.work / "reload-siesta", {NAME: llama_recipe(model, args, unload_timeout=f"{IDLE:g}s")},
                    llama_server=ctx.llama_server, global_unload_timeout="1h")
    router = Router(ctx.work / "reload-router", ctx.llama_server, models_dir, args)
    sleeper = _Sleeper(ctx.work / "reload-sleep", ctx.llama_server, model, [*args, "--sleep-idle-seconds", f"{IDLE:g}"])
    cached: dict[str, list[float]] = {}

    async def siesta_unloaded() -> None:
        async def check() -> bool:
            snap = (await siesta.models(ctx.session))[NAME]
            return snap["pid"] is None and snap["state"] == "unloaded"

        await _until(check, "Siesta's idle unload of the big model", 30 + IDLE)

    async def via_siesta() -> float:
        ttft = (await timed_stream(ctx.session, _chat_url(siesta.url), body))["ttft"]
        await siesta_unloaded()
        return ttft

    async def by_hand() -> float:
        server = LlamaServer(ctx.work / "reload-hand", ctx.llama_server, model, args)
        try:
            t0 = time.perf_counter()
            server.start()
            await wait_http_ok(ctx.session, server.url + "/health", 60, proc=server.proc, interval=0.010,
                               log=server.log)
            result = await timed_stream(ctx.session, _chat_url(server.url), body)
            return result["ttft"] + (time.perf_counter() - t0 - result["total"])
        finally:
            server.stop()

    async def via_router() -> float:
        ttft = (await timed_stream(ctx.session, _chat_url(router.url), body))["ttft"]
        await router.unload(ctx.session, NAME)
        return ttft

    async def via_sleep() -> float:
        slept = sleeper.sleeps()
        ttft = (await timed_stream(ctx.session, _chat_url(sleeper.url), body))["ttft"]

        async def asleep() -> bool:
            return sleeper.sleeps() > slept

        await _until(asleep, "llama-server's sleep mode", 30 + IDLE)
        return ttft

    ways: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("siesta", via_siesta), ("hand", by_hand), ("router", via_router), ("sleep", via_sleep)]
    results: dict[str, dict[str, list[float]]] = {s: {k: [] for k, _ in ways} for s in ("warm", "evicted")}
    try:
        await siesta.start(ctx.session)
        await router.start(ctx.session)
        sleeper.start()
        await wait_http_ok(ctx.session, sleeper.url + "/health", 60, proc=sleeper.proc, log=sleeper.log)
        for _, fn in ways:  # each once, unmeasured: it answers, and every way ends unloaded
            await fn()
        for rep in range(reps):
            for state in ("warm", "evicted") if rep % 2 == 0 else ("evicted", "warm"):
                for key, fn in ways[rep % len(ways):] + ways[:rep % len(ways)]:
                    cached.setdefault(state, []).append(_page_cache(model, state))
                    results[state][key].append(await fn())
            ctx.log(f"round {rep + 1}/{reps}: " + "; ".join(
                f"{s}: " + ", ".join(f"{k} {ms(v[-1]):.0f}" for k, v in r.items()) for s, r in results.items()) + " ms")
    finally:
        sleeper.stop()
        router.stop()
        siesta.stop()
    ctx.notes["reload"] = {"model_mb": size_mb, "results": results, "page_cache_share_before": cached}
    for state, label in (("warm", "in the page cache"), ("evicted", "evicted from the page cache")):
        got = results[state]
        hand = ms(median(got["hand"]))
        shares = cached[state]
        fig = f"reload after idle, {size_mb:.0f} MB model, {label}"
        spread = {k: f"{ms(min(v)):.0f}-{ms(max(v)):.0f} ms" for k, v in got.items()}
        note = (f"by hand {spread['hand']}; page cache before each request {100 * min(shares):.0f}-"
                f"{100 * max(shares):.0f}% of the file")
        value = ms(median(got["siesta"]))
        ctx.add(Row(fig, f"request to first token p50 of {reps}, Siesta (unloaded after {IDLE:g} s idle)", value, "ms",
                    "by hand, health polled every 10 ms", hand, "delta", "<= +10 ms", value - hand <= 10.0,
                    note=f"Siesta {spread['siesta']}; " + note))
        ctx.add(Row(fig, "p50, llama.cpp router (child unloaded)", ms(median(got["router"])), "ms",
                    "by hand, health polled every 10 ms", hand, "delta", "(reference)",
                    note=f"router {spread['router']}"))
        ctx.add(Row(fig, f"p50, llama-server's own sleep mode (--sleep-idle-seconds {IDLE:g})", ms(median(got["sleep"])),
                    "ms", "by hand, health polled every 10 ms", hand, "delta", "(reference)",
                    note=f"sleep mode {spread['sleep']}; no process started"))
        ctx.log(f"reload ({state}): Siesta {value:.0f}, by hand {hand:.0f}, router {ms(median(got['router'])):.0f}, "
                f"sleep mode {ms(median(got['sleep'])):.0f} ms (p50)")
