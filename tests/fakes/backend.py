"""A small OpenAI-compatible server for fast lifecycle tests: a real process on a real port.

Started by ``backend = "command"`` recipes: ``python tests/fakes/backend.py --port {port} [options]``.
Options make it misbehave on purpose: start slowly, never become healthy, crash after N
requests, ignore SIGTERM, answer slowly.
"""

from __future__ import annotations

import signal
import sys

if "--exit-at-start" in sys.argv:  # a server that dies at once: no need to import anything
    print("fake backend: exiting at start", flush=True)
    sys.exit(int(sys.argv[sys.argv.index("--exit-at-start") + 1]))

if "--ignore-sigterm" in sys.argv:
    # Before the slow imports below: on a busy machine a stop could otherwise arrive while
    # aiohttp is still importing and end the process that was meant to ignore it.
    signal.signal(signal.SIGTERM, lambda *_: print("fake backend: ignoring SIGTERM", flush=True))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

from aiohttp import web  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--exit-after", type=int, default=0, help="exit(3) after this many requests")
    parser.add_argument("--exit-at-start", type=int, default=None, help="exit with this code at once")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per answer (per chunk when streaming)")
    parser.add_argument("--chunks", type=int, default=5)
    args = parser.parse_args()

    if args.exit_at_start is not None:
        print("fake backend: exiting at start", flush=True)
        sys.exit(args.exit_at_start)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: print("fake backend: ignoring SIGTERM", flush=True))
    served = 0
    started = time.monotonic()

    async def health(request: web.Request) -> web.Response:
        if args.never_healthy or time.monotonic() - started < args.startup_delay:
            return web.json_response({"status": "loading"}, status=503)
        return web.json_response({"status": "ok"})

    async def completion(request: web.Request) -> web.StreamResponse:
        nonlocal served
        body = await request.json()
        served += 1
        if args.exit_after and served >= args.exit_after:
            print("fake backend: crashing on purpose", flush=True)
            os._exit(3)
        echo = {"model": body.get("model"), "pid": os.getpid(), "keep_alive_seen": "keep_alive" in body,
                "path": request.path}
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(args.chunks):
                if args.delay:
                    await asyncio.sleep(args.delay)
                chunk = {"choices": [{"index": 0, "delta": {"content": f"tok{i} "}}], **echo}
                await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await resp.write(b"data: [DONE]\n\n")
            return resp
        if args.delay:
            await asyncio.sleep(args.delay)
        return web.json_response({"object": "chat.completion",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
                                  **echo})

    app = web.Application()
    app.add_routes([web.get("/health", health), web.post("/v1/{tail:.+}", completion)])
    print(f"fake backend listening on {args.port}", flush=True)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, handle_signals=not args.ignore_sigterm)


if __name__ == "__main__":
    main()
