"""The Ollama API's added latency (``python -m bench --only ollama``): the same 16-token chat
through Siesta's ``POST /api/chat`` (translated to the backend's OpenAI route and back into
Ollama's shape) and through its ``POST /v1/chat/completions``, alternating, on the same loaded
tiny model. The baseline is ``/v1``, measured in the same run; the row is their ratio and the
milliseconds ``/api/chat`` adds."""

from __future__ import annotations

import json

from .figures import MODEL, Ctx, Row
from .util import JSON_HEADERS, Siesta, ms, pct, timed_post

MESSAGES = [{"role": "user", "content": "hello"}]


async def _tokens(ctx: Ctx, url: str, body: bytes, field: str) -> int | None:
    async with ctx.session.post(url, data=body, headers=JSON_HEADERS) as resp:
        data = json.loads(await resp.read())
    if field == "eval_count":
        return data.get("eval_count")
    return data.get("usage", {}).get("completion_tokens")


async def ollama_latency(ctx: Ctx, siesta: Siesta) -> None:
    n = ctx.scale(200, 60)
    v1_url, ol_url = siesta.url + "/v1/chat/completions", siesta.url + "/api/chat"
    v1 = json.dumps({"model": MODEL, "messages": MESSAGES, "max_tokens": 16}).encode()
    ol = json.dumps({"model": MODEL, "messages": MESSAGES, "stream": False, "options": {"num_predict": 16}}).encode()
    counts = (await _tokens(ctx, v1_url, v1, "usage"), await _tokens(ctx, ol_url, ol, "eval_count"))
    a: list[float] = []
    b: list[float] = []
    for i in range(20 + n):  # the first 20 warm up
        pair = [(a, v1_url, v1), (b, ol_url, ol)]
        if i % 2:
            pair.reverse()
        for samples, url, body in pair:
            took = await timed_post(ctx.session, url, body)
            if i >= 20:
                samples.append(took)
    ctx.samples.update(ollama_v1=a, ollama_chat=b)
    fig = "Ollama API: 16-token chat"
    note = f"tokens generated: /v1 {counts[0]}, /api/chat {counts[1]}"
    for label, q in (("p50", 50), ("p99", 99)):
        base, val = ms(pct(a, q)), ms(pct(b, q))
        ctx.add(Row(fig, f"{label}, POST /api/chat", val, "ms", "POST /v1/chat/completions (same run)", base, "ratio",
                    "(reference)", note=note))
    added = ms(pct(b, 50) - pct(a, 50))
    ctx.add(Row(fig, "p50 added by Ollama's shape", added, "ms", target="(reference)", note=note))
