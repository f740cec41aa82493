"""How much of Siesta's added latency is its own code, and how much the proxy's libraries.

    python -m bench.proxy_floor [--n 2000] [--variants siesta,siesta-uvloop,bare,bare-hc,raw,...]

Against the zero-work fake, alternating with direct requests (the same client as
``python -m bench``), it measures the added p50 latency and the proxy's CPU per request of:

- ``siesta``: ``python -m app serve`` as shipped;
- ``bare``: the smallest aiohttp proxy that does what Siesta's relay does (read the body,
  POST it upstream on a shared ClientSession, return the answer) with no middleware, no
  JSON parsing, no model bookkeeping: the floor of aiohttp server + client on asyncio;
- ``siesta-uvloop`` and ``bare-uvloop``: the same on uvloop (``pip install uvloop``), if
  it is installed;
- ``bare-hc``, ``bare-hc-uvloop``: ``bare`` with aiohttp's ``handler_cancellation=True``
  (as Siesta's ApiServer sets it);
- ``bare-tuned``, ``bare-hc-tuned-uvloop``, ...: the client session without a cookie jar and
  without a total time-out (``DummyCookieJar()``, ``ClientTimeout(total=None, sock_connect=30)``);
- ``raw``: a proxy written on asyncio protocols with a hand-rolled HTTP/1.1 parser (the
  floor of Python itself, for scale; it is no candidate: it skips everything HTTP needs).

A diagnostic, not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import psutil

from .util import (
    FAKE_SERVER,
    PROCS,
    Siesta,
    chat_body,
    child_env,
    fake_recipe,
    free_port,
    ms,
    new_session,
    p50,
    p99,
    spawn,
    timed_post,
    wait_http_ok,
)

BARE = r'''
import asyncio, sys
from aiohttp import web, ClientSession, TCPConnector
upstream = sys.argv[2]
async def main():
    if "--tuned" in sys.argv:  # no cookie jar, no total time-out (no timer per request)
        from aiohttp import ClientTimeout, DummyCookieJar
        session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False, cookie_jar=DummyCookieJar(),
                                timeout=ClientTimeout(total=None, sock_connect=30))
    else:
        session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
    async def forward(request):
        body = await request.read()
        async with session.post(upstream + request.raw_path, data=body,
                                headers={"Content-Type": "application/json"}) as resp:
            payload = await resp.read()
            return web.Response(body=payload, status=resp.status, content_type=resp.content_type)
    async def health(request):
        return web.json_response({"status": "ok"})
    app = web.Application()
    app.add_routes([web.post("/v1/{tail:.+}", forward), web.get("/api/v1/health", health)])
    runner = web.AppRunner(app, access_log=None, handler_cancellation="--hc" in sys.argv)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", int(sys.argv[1])).start()
    await asyncio.Event().wait()
if "--uvloop" in sys.argv:
    import uvloop
    uvloop.install()
asyncio.run(main())
'''

SIESTA_UVLOOP = r'''
import sys, uvloop
uvloop.install()
from app.cli import main
sys.exit(main(sys.argv[1:]))
'''


async def run(args: argparse.Namespace) -> None:
    """Starts every variant at once (idle ones cost nothing) and sends the requests round-robin,
    the order rotating, so that drifts in the machine's speed hit every variant alike."""
    work = Path(tempfile.mkdtemp(prefix="siesta-floor-"))
    session = new_session()
    try:
        fake_port = free_port()
        spawn([sys.executable, str(FAKE_SERVER), "--port", str(fake_port)], log=work / "fake.log")
        direct = f"http://127.0.0.1:{fake_port}/v1/chat/completions"
        await wait_http_ok(session, f"http://127.0.0.1:{fake_port}/health", 10)
        try:
            import uvloop  # noqa: F401 - only whether it is there
            have_uvloop = True
        except ImportError:
            have_uvloop = False
        targets: dict[str, tuple[str, int]] = {"direct": (direct, 0)}
        for variant in args.variants.split(","):
            if "uvloop" in variant and not have_uvloop:
                print(f"{variant:16s} skipped: uvloop is not installed")
                continue
            if variant.startswith("siesta"):
                # Siesta's backend is a fake of its own; the proxy sends to the same kind of process
                siesta = Siesta(work / variant, {"fake": fake_recipe()}, llama_server=None)
                if variant == "siesta-uvloop":
                    script = work / "siesta_uvloop.py"
                    script.write_text(SIESTA_UVLOOP)
                    siesta.argv = [sys.executable, str(script), *siesta.argv[3:]]
                await siesta.start(session)
                await siesta.load(session, "fake")
                targets[variant] = (siesta.url + "/v1/chat/completions", siesta.pid)
            else:
                port = free_port()
                script = work / "bare.py"
                script.write_text(BARE)
                argv = [sys.executable, str(script), str(port), f"http://127.0.0.1:{fake_port}"]
                if "uvloop" in variant:
                    argv.append("--uvloop")
                if "-hc" in variant:
                    argv.append("--hc")
                if "-tuned" in variant:
                    argv.append("--tuned")
                if variant == "raw":
                    argv = [sys.executable, "-m", "bench.raw_proxy", str(port), str(fake_port)]
                proc = spawn(argv, log=work / f"{variant}.log", env=child_env(work / variant))
                await wait_http_ok(session, f"http://127.0.0.1:{port}/api/v1/health", 10, proc=proc,
                                   log=work / f"{variant}.log")
                targets[variant] = (f"http://127.0.0.1:{port}/v1/chat/completions", proc.pid)
        body = chat_body("fake", 1)
        names = list(targets)
        for _ in range(200):
            for name in names:
                await timed_post(session, targets[name][0], body)
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu0 = {name: psutil.Process(pid).cpu_times() for name, (_, pid) in targets.items() if pid}
        for i in range(args.n):
            k = i % len(names)
            for name in names[k:] + names[:k]:
                times[name].append(await timed_post(session, targets[name][0], body))
        cpu1 = {name: psutil.Process(pid).cpu_times() for name, (_, pid) in targets.items() if pid}
        d = times["direct"]
        print(f"{'direct':16s} p50 {ms(p50(d)):.3f} ms, p99 {ms(p99(d)):.3f} ms")
        for name in names[1:]:
            p = times[name]
            cpu = ((cpu1[name].user - cpu0[name].user) + (cpu1[name].system - cpu0[name].system)) / args.n
            print(f"{name:16s} p50 {ms(p50(p)):.3f} ms (added {ms(p50(p) - p50(d)):+.3f} ms), p99 added "
                  f"{ms(p99(p) - p99(d)):+.3f} ms; proxy CPU {cpu * 1e6:.0f} us/request", flush=True)
    finally:
        await session.close()
        PROCS.kill_all()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--variants", default="siesta,siesta-uvloop,bare,bare-hc,bare-uvloop,bare-hc-uvloop,raw")
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
