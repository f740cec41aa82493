"""The streaming figures of docs/performance.md: Siesta and llama.cpp's router, each against its backend.

Same conventions as :mod:`bench.figures`, whose ``Ctx`` and ``Row`` these use. For each
concurrency (1 and 8 streams of 200 tokens) the rounds run in two blocks per proxy,
Siesta's and the router's alternating (one backend process at a time: Siesta's model is
unloaded while the router's child runs, and the other way round). Within a block, direct
and proxied rounds alternate, the order flipping every round, as in the latency figure;
each proxy is compared with its own backend process, and the two proxies with each other
by what each costs against its own.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import psutil

from .figures import MODEL, Ctx, Row, _chat_url
from .util import Router, Siesta, chat_body, median, ms, p50, timed_stream

STREAM_TOKENS = 200
PACED_TOKENS, PACED_INTERVAL = 100, 0.02  # 50 tokens/s per stream, a realistic local-model rate


async def streaming(ctx: Ctx, siesta: Siesta, router: Router | None = None) -> None:
    """Streaming through Siesta (and through the router, when given) against direct, then at a paced rate."""
    await _llama_streaming(ctx, siesta, router)
    await paced_streaming(ctx, siesta)


async def _rounds(ctx: Ctx, direct: str, proxied: str, body: bytes, concurrency: int, rounds: int,
                  proxy_pid: int, got: dict[str, list[dict[str, float]]], *, first: int = 0) -> float:
    """``rounds`` rounds of ``concurrency`` streams, direct and proxied alternating; returns the
    proxy process's CPU seconds spent in its rounds (its children excluded)."""
    proc = psutil.Process(proxy_pid)
    cpu = 0.0
    for _ in range(2):  # warm-up: a new backend process, a new upstream connection
        for url in (direct, proxied):
            await asyncio.gather(*(timed_stream(ctx.session, url, body) for _ in range(concurrency)))
    for r in range(first, first + rounds):
        order = [("direct", direct), ("proxy", proxied)]
        if r % 2:
            order.reverse()
        for name, url in order:
            c0 = proc.cpu_times()
            got[name] += await asyncio.gather(*(timed_stream(ctx.session, url, body) for _ in range(concurrency)))
            c1 = proc.cpu_times()
            if name == "proxy":
                cpu += (c1.user - c0.user) + (c1.system - c0.system)
    return cpu


def _summary(got: dict[str, list[dict[str, float]]], cpu: float) -> dict[str, Any]:
    for name in got:
        bad = [s for s in got[name] if s["tokens"] != STREAM_TOKENS]
        if bad:
            raise RuntimeError(f"{name}: streams with {bad[0]['tokens']} tokens, expected {STREAM_TOKENS}")
    tokens = sum(x["tokens"] for x in got["proxy"])
    return {"d_tps": median(s["tps"] for s in got["direct"]), "p_tps": median(s["tps"] for s in got["proxy"]),
            "d_ttfc": ms(p50(s["ttfc"] for s in got["direct"])), "p_ttfc": ms(p50(s["ttfc"] for s in got["proxy"])),
            "cpu_per_token": cpu / tokens if tokens else math.nan}


async def _llama_streaming(ctx: Ctx, siesta: Siesta, router: Router | None) -> None:
    body = chat_body(MODEL, STREAM_TOKENS, stream=True)
    for concurrency, rounds in ((1, ctx.scale(40, 12)), (8, ctx.scale(16, 6))):
        s_got: dict[str, list[dict[str, float]]] = {"direct": [], "proxy": []}
        r_got: dict[str, list[dict[str, float]]] = {"direct": [], "proxy": []}
        s_cpu = r_cpu = 0.0
        blocks = 2 if router is not None else 1
        for block in range(blocks):
            direct = _chat_url(await siesta.backend_url(ctx.session, MODEL))
            s_cpu += await _rounds(ctx, direct, _chat_url(siesta.url), body, concurrency, rounds // blocks,
                                   siesta.pid, s_got, first=block)
            if router is None:
                continue
            await siesta.unload(ctx.session, MODEL)
            routed = _chat_url(router.url)
            await timed_stream(ctx.session, routed, body)  # loads the router's child
            direct = _chat_url(await router.child_url(ctx.session, MODEL))
            assert router.proc is not None
            r_cpu += await _rounds(ctx, direct, routed, body, concurrency, rounds // blocks, router.proc.pid, r_got,
                                   first=block + 1)
            await router.unload(ctx.session, MODEL)
        s = _summary(s_got, s_cpu)
        fig = f"streaming, {concurrency} concurrent stream{'s' if concurrency > 1 else ''}"
        ctx.add(Row(fig, "tokens/s per stream (median)", s["p_tps"], "tok/s", "direct", s["d_tps"], "ratio",
                    ">= 0.95x", s["p_tps"] / s["d_tps"] >= 0.95))
        ctx.add(Row(fig, "time to first chunk p50", s["p_ttfc"], "ms", "direct", s["d_ttfc"], "delta", "<= +1 ms",
                    s["p_ttfc"] - s["d_ttfc"] <= 1.0))
        ctx.add(Row(fig, "Siesta CPU per streamed token", s["cpu_per_token"] * 1e6, "us", target="(attribution)",
                    note=f"{100 * s['cpu_per_token'] * s['p_tps'] * concurrency:.0f}% of a core at the measured rate"))
        ctx.log(f"{concurrency} streams: {s['p_tps']:.0f} vs {s['d_tps']:.0f} tok/s; first chunk {s['p_ttfc']:.2f} vs "
                f"{s['d_ttfc']:.2f} ms; Siesta CPU {s['cpu_per_token'] * 1e6:.0f} us/token")
        if router is None:
            continue
        r = _summary(r_got, r_cpu)
        ctx.add(Row(fig, "tokens/s per stream (median), through llama.cpp router", r["p_tps"], "tok/s",
                    "direct to the router's child", r["d_tps"], "ratio", "(reference)"))
        ctx.add(Row(fig, "time to first chunk p50, through llama.cpp router", r["p_ttfc"], "ms",
                    "direct to the router's child", r["d_ttfc"], "delta", "(reference)"))
        ctx.add(Row(fig, "router CPU per streamed token", r["cpu_per_token"] * 1e6, "us", target="(attribution)",
                    note="the router process, its child excluded"))
        s_ratio, r_ratio = s["p_tps"] / s["d_tps"], r["p_tps"] / r["d_tps"]
        ctx.add(Row(fig, "tokens/s as a share of direct: Siesta vs router", s_ratio, "x", "router", r_ratio, "delta",
                    "Siesta >= router", s_ratio >= r_ratio, note="each against its own backend process"))
        s_added, r_added = s["p_ttfc"] - s["d_ttfc"], r["p_ttfc"] - r["d_ttfc"]
        ctx.add(Row(fig, "first chunk p50 added: Siesta vs router", s_added, "ms", "router's added", r_added, "delta",
                    "Siesta <= router", s_added <= r_added, note="each against its own backend process"))
        ctx.log(f"{concurrency} streams via router: {r['p_tps']:.0f} vs {r['d_tps']:.0f} tok/s; first chunk "
                f"{r['p_ttfc']:.2f} vs {r['d_ttfc']:.2f} ms; router CPU {r['cpu_per_token'] * 1e6:.0f} us/token")


async def paced_streaming(ctx: Ctx, siesta: Siesta, name: str = "paced", concurrency: int = 8) -> None:
    """8 streams from a backend that emits 50 tokens/s each: the proxy's cost at a realistic rate."""
    body = chat_body(name, PACED_TOKENS, stream=True)
    direct = _chat_url(await siesta.backend_url(ctx.session, name))
    proxied = _chat_url(siesta.url)
    got: dict[str, list[dict[str, float]]] = {"direct": [], "siesta": []}
    rounds = ctx.scale(3, 1)
    for r in range(rounds):
        order = [("direct", direct), ("siesta", proxied)]
        if r % 2:
            order.reverse()
        for key, url in order:
            got[key] += await asyncio.gather(*(timed_stream(ctx.session, url, body) for _ in range(concurrency)))
    await siesta.unload(ctx.session, name)
    fig = f"streaming at 50 tokens/s per stream, {concurrency} streams (paced fake)"
    d_tps = median(x["tps"] for x in got["direct"])
    s_tps = median(x["tps"] for x in got["siesta"])
    ctx.add(Row(fig, "tokens/s per stream (median)", s_tps, "tok/s", "direct", d_tps, "ratio", ">= 0.95x",
                s_tps / d_tps >= 0.95))
    d_ttfc, s_ttfc = ms(p50(x["ttfc"] for x in got["direct"])), ms(p50(x["ttfc"] for x in got["siesta"]))
    ctx.add(Row(fig, "time to first chunk p50", s_ttfc, "ms", "direct", d_ttfc, "delta", "<= +1 ms",
                s_ttfc - d_ttfc <= 1.0))
    ctx.log(f"paced: {s_tps:.1f} vs {d_tps:.1f} tok/s; first chunk {s_ttfc:.2f} vs {d_ttfc:.2f} ms")
