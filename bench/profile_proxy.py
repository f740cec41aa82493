"""Where a proxied request's time goes inside Siesta: py-spy samples of ``siesta serve`` under load.

    python -m bench.profile_proxy [--backend fake|llama] [--mode seq|stream|rps] [--seconds 15]

Starts ``python -m app serve`` under ``py-spy record`` (``pip install py-spy``), drives it
with the benchmark's aiohttp client (sequential non-streaming requests, 8 concurrent
streams, or 16 concurrent clients), then prints the functions that hold the most samples,
self and inclusive, and writes the collapsed stacks (flame-graph input) to
``bench/results/profile-<backend>-<mode>.txt``. A diagnostic, not part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

from .util import BENCH_DIR, PROCS, Siesta, chat_body, fake_recipe, llama_recipe, new_session, timed_post, timed_stream

CPROFILE_SERVE = r'''
import cProfile, sys
from app.cli import main
profile = cProfile.Profile()
profile.enable()
try:
    main(sys.argv[2:])
finally:
    profile.disable()
    profile.dump_stats(sys.argv[1])
'''


async def drive(args: argparse.Namespace, work: Path) -> Path:
    from app.demo_model import write_tiny_model

    model = write_tiny_model(work / "tiny.gguf")
    recipes = {"fake": fake_recipe(), "tiny": llama_recipe(model, ["-t", "1", "--ctx-size", "4096", "-np", "8"])}
    siesta = Siesta(work / "siesta", recipes, llama_server=Path(args.llama_server) if args.llama_server else None)
    out = BENCH_DIR / "results" / f"profile-{args.backend}-{args.mode}.{'pstats' if args.cprofile else 'txt'}"
    out.parent.mkdir(exist_ok=True)
    if args.cprofile:
        script = work / "cprofile_serve.py"
        script.write_text(CPROFILE_SERVE)
        siesta.argv = [sys.executable, str(script), str(out), *siesta.argv[3:]]
    else:
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            raise SystemExit("py-spy not found: pip install py-spy")
        siesta.argv = [py_spy, "record", "--format", "raw", "--rate", str(args.rate), "--output",
                       str(out), "--", *siesta.argv]
    session = new_session()
    try:
        await siesta.start(session)
        name = args.backend if args.backend == "fake" else "tiny"
        await siesta.load(session, name)
        url = siesta.url + "/v1/chat/completions"
        stop = time.perf_counter() + args.seconds
        count = 0
        if args.mode == "seq":
            body = chat_body(name, 16)
            while time.perf_counter() < stop:
                await timed_post(session, url, body)
                count += 1
        elif args.mode == "stream":
            body = chat_body(name, 200, stream=True)
            while time.perf_counter() < stop:
                await asyncio.gather(*(timed_stream(session, url, body) for _ in range(8)))
                count += 8
        else:
            body = chat_body(name, 1)

            async def worker() -> None:
                nonlocal count
                while time.perf_counter() < stop:
                    await timed_post(session, url, body)
                    count += 1

            await asyncio.gather(*(worker() for _ in range(16)))
        print(f"{count} requests in {args.seconds:.0f} s")
        args.count = count
    finally:
        await session.close()
        # py-spy writes its file when its child exits: stop Siesta (not py-spy) first
        if siesta.proc is not None and not args.cprofile:
            import psutil

            for child in psutil.Process(siesta.proc.pid).children():
                child.terminate()
            siesta.proc.wait(30)
        siesta.stop()
    return out


def summarize(path: Path, top: int) -> None:
    self_count: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        if "(" not in frames[-1] or "select (selectors.py" in frames[-1] or "epoll" in frames[-1]:
            pass
        self_count[frames[-1]] += count
        for frame in set(frames):
            incl[frame] += count
    print(f"{total} samples (idle in epoll included)")
    print("\nself:")
    for frame, n in self_count.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\ninclusive:")
    for frame, n in incl.most_common(top * 2):
        print(f"  {100 * n / total:5.1f}%  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["fake", "llama"], default="fake")
    parser.add_argument("--mode", choices=["seq", "stream", "rps"], default="seq")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rate", type=int, default=997)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--llama-server")
    parser.add_argument("--cprofile", action="store_true", help="cProfile inside the server instead of py-spy")
    args = parser.parse_args()
    if args.llama_server is None:
        from .__main__ import _find_llama_server

        found = _find_llama_server(None)
        args.llama_server = str(found) if found else None
    work = Path(tempfile.mkdtemp(prefix="siesta-prof-"))
    try:
        out = asyncio.run(drive(args, work))
    finally:
        PROCS.kill_all()
        shutil.rmtree(work, ignore_errors=True)
    if args.cprofile:
        import pstats

        print(f"cProfile of siesta serve; per-request figures divide by {args.count} requests")
        stats = pstats.Stats(str(out))
        stats.sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top * 2)
        return 0
    summarize(out, args.top)
    print(f"\ncollapsed stacks: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
